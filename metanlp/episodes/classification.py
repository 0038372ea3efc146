"""N-way K-shot text-classification episodes, optionally one task family per value of a column."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from metanlp.episodes.sampler import EpisodeSampler
from metanlp.episodes.sources import ClassificationSource
from metanlp.episodes.types import EpisodeSpec

logger = logging.getLogger(__name__)


@dataclass
class _Task:
    name: str
    classes: list[str]
    pools: dict[str, np.ndarray]
    n_way: int
    size: int
    group: str | None = None


class ClassificationSampler(EpisodeSampler):
    """Draw N-way K-shot Q-query classification episodes from a `datasets.Dataset`.

    Each episode picks ``n_way`` classes (from ``classes``, e.g. one split of `split_names`),
    ``k_shot`` support and ``q_query`` query rows per class without overlap, and numbers the
    classes ``0..n_way-1`` in a fresh random order (``label_names`` keeps the mapping).

    With ``group_by`` (e.g. ``"domain"``) every value of that column is a task family: an episode
    first picks a group, then classes within it; ``n_way=None`` takes all of the group's classes.

    Args:
        dataset (`datasets.Dataset` or `ClassificationSource`): ``text`` + ``ClassLabel`` ``label``.
        n_way (`int` or `None`, defaults to 5): Classes per episode; ``None`` = all available.
        k_shot (`int`, defaults to 5): Support examples per class.
        q_query (`int`, defaults to 5): Query examples per class.
        classes (`Sequence[str]`, *optional*): Allowed class names (a meta-split); all by default.
        group_by (`str`, *optional*): Column defining task families.
        groups (`Sequence[str]`, *optional*): Allowed group values (a split of the domains).
        group_weights (`"uniform"`, `"size"` or `Mapping[str, float]`, defaults to ``"uniform"``):
            How often each group is picked.
        drop_small (`bool`, defaults to `False`): Leave out classes with fewer than ``k_shot +
            q_query`` examples (and groups left with too few classes) instead of raising.
        name (`str`, *optional*): Dataset name for task names and episode files.
        text_column, label_column (`str`): Column names.
        **kwargs: `EpisodeSampler` arguments (``seed``, ``rank``, ``world_size``, ``tokenizer``,
            ``max_length``, ``model``, ``collator``).

    Example:
        ```python
        >>> sampler = ClassificationSampler(bbc, n_way=3, k_shot=5, q_query=5, seed=0,
        ...                                 tokenizer=tokenizer, name="bbc_news")
        >>> episode = sampler.episode(0)
        >>> episode.support["labels"].tolist()  # 5 of each of 0, 1, 2 (shuffled)
        ```
    """

    def __init__(
        self,
        dataset: Dataset | ClassificationSource,
        *,
        n_way: int | None = 5,
        k_shot: int = 5,
        q_query: int = 5,
        classes: Sequence[str] | None = None,
        group_by: str | None = None,
        groups: Sequence[str] | None = None,
        group_weights: str | Mapping[str, float] = "uniform",
        drop_small: bool = False,
        name: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(dataset, ClassificationSource):
            source = dataset
        else:
            source = ClassificationSource(
                dataset,
                name=name,
                text_column=text_column,
                label_column=label_column,
                group_column=group_by,
            )
        if group_by is not None and source.columns.get("group_column") != group_by:
            raise ValueError(
                f"group_by={group_by!r} but the source was built with {source.columns}."
            )
        if k_shot < 1 or q_query < 0:
            raise ValueError(
                f"k_shot={k_shot}, q_query={q_query}; need k_shot >= 1 and q_query >= 0."
            )
        if n_way is not None and n_way < 2:
            raise ValueError(
                f"n_way={n_way}; an episode needs at least 2 classes (or None for all)."
            )
        self.source = source
        self.sources = {source.name: source}
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.drop_small = drop_small
        if classes is not None:
            unknown = sorted(set(classes) - set(source.label_names))
            if unknown:
                raise ValueError(
                    f"Unknown classes {unknown}; {source.name!r} has {source.label_names}."
                )
        allowed = list(source.label_names) if classes is None else [str(c) for c in classes]

        if group_by is None:
            self.tasks = [self._task(source.name, source.pools(), allowed)]
        else:
            values = source.group_values()
            chosen = values if groups is None else [str(g) for g in groups]
            missing = sorted(set(chosen) - set(values))
            if missing:
                raise ValueError(
                    f"Unknown {group_by} values {missing}; {source.name!r} has {values}."
                )
            tasks = [
                self._task(f"{source.name}/{group_by}={g}", source.pools(g), allowed, group=g)
                for g in chosen
            ]
            self.tasks = [t for t in tasks if t is not None]
            if not self.tasks:
                raise ValueError(f"No {group_by} of {source.name!r} can make an episode: {chosen}.")
        self.task_probs = self._weights(group_weights)

    @property
    def num_examples(self) -> int:
        """Rows of the allowed classes (and groups) episodes are drawn from."""
        return int(sum(t.size for t in self.tasks))

    def _task(
        self,
        task_name: str,
        pools: dict[str, np.ndarray],
        allowed: list[str],
        group: str | None = None,
    ) -> _Task | None:
        need = self.k_shot + self.q_query
        where = f" in {task_name!r}" if group is not None else f" of {task_name!r}"
        pools = {c: pools[c] for c in allowed if c in pools}
        for c in [c for c in allowed if c in pools and len(pools[c]) < need]:
            if not self.drop_small:
                raise ValueError(
                    f"Class {c!r}{where} has {len(pools[c])} examples; K+Q = {self.k_shot}+"
                    f"{self.q_query} needs at least {need} (lower K or Q, leave the class out with "
                    "classes=..., or pass drop_small=True)."
                )
            logger.warning(
                "Leaving out class %r%s: %d examples < K+Q = %d.", c, where, len(pools[c]), need
            )
            del pools[c]
        n_way = len(pools) if self.n_way is None else self.n_way
        if len(pools) < max(n_way, 2):
            if group is not None and self.drop_small:
                logger.warning(
                    "Leaving out %r: %d usable classes < N = %d.", task_name, len(pools), n_way
                )
                return None
            raise ValueError(
                f"n_way={n_way} but only {len(pools)} of the {len(allowed)} allowed classes{where} "
                f"have at least K+Q = {need} "
                f"examples: {sorted(pools)}. Lower n_way, K or Q, or allow more classes."
            )
        size = int(sum(len(p) for p in pools.values()))
        return _Task(task_name, sorted(pools), pools, n_way, size, group)

    def _weights(self, group_weights: str | Mapping[str, float]) -> np.ndarray:
        if isinstance(group_weights, Mapping):
            if self.tasks[0].group is None:
                raise ValueError("group_weights as a mapping needs group_by=...")
            by_task = {t.group: t for t in self.tasks}
            unknown = sorted(set(group_weights) - set(by_task))
            if unknown:
                raise ValueError(
                    f"group_weights names unknown groups {unknown}; known {sorted(by_task)}."
                )
            w = np.asarray([float(group_weights.get(k, 0.0)) for k in by_task])
        elif group_weights == "uniform":
            w = np.ones(len(self.tasks))
        elif group_weights == "size":
            w = np.asarray([t.size for t in self.tasks], dtype=float)
        else:
            raise ValueError(
                f"group_weights={group_weights!r}; use 'uniform', 'size' or a mapping."
            )
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"group_weights must be >= 0 with a positive sum, got {w.tolist()}.")
        return w / w.sum()

    def draw(self, rng: np.random.Generator, index: int) -> EpisodeSpec:
        task = (
            self.tasks[int(rng.choice(len(self.tasks), p=self.task_probs))]
            if len(self.tasks) > 1
            else self.tasks[0]
        )
        # choice without replacement returns the picks in random order: that is the permutation.
        picked = [task.classes[i] for i in rng.choice(len(task.classes), task.n_way, replace=False)]
        support, query = [], []
        for c in picked:
            rows = rng.choice(task.pools[c], self.k_shot + self.q_query, replace=False)
            support.extend(rows[: self.k_shot].tolist())
            query.extend(rows[self.k_shot :].tolist())
        return classification_spec(self.source, task.name, picked, support, query, rng,
                                   self.seed, index)  # fmt: skip


def classification_spec(
    source: object,
    task: str,
    picked: list[str],
    support: list[int],
    query: list[int],
    rng: np.random.Generator,
    seed: int,
    index: int,
) -> EpisodeSpec:
    """A classification spec whose support and query rows are presented in a random order."""
    return EpisodeSpec(
        kind="classification",
        dataset=source.name,
        fingerprint=source.fingerprint,
        task=task,
        label_names=picked,
        support_rows=[support[i] for i in rng.permutation(len(support))],
        query_rows=[query[i] for i in rng.permutation(len(query))],
        seed=seed,
        index=index,
    )
