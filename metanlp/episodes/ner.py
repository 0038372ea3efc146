"""Few-NERD N-way K~2K-shot NER episodes (Ding et al. 2021), strict or relaxed.

Greedy sampling over sentences, as stated in ALGORITHMS.md: pick N target types; walk the
candidate sentences (those mentioning a target) in random order and accept one only if
(a) every type it mentions is a target (strict mode only), (b) every target stays at or below 2K
mentions, and (c) it mentions a target still below K; stop once every target has K. The query
is drawn the same way (with ``q_query`` for K) from sentences not in the support.

Each walk is one pass over a random permutation, so it always ends; an episode gets at most
``attempts`` walks (each with freshly drawn types) before `EpisodeSamplingError` names the type
that ran out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from datasets import Dataset

from metanlp.episodes.sampler import EpisodeSampler
from metanlp.episodes.sources import NERSource
from metanlp.episodes.types import NER_MODES, NER_SCHEMES, EpisodeSamplingError, EpisodeSpec


class NERSampler(EpisodeSampler):
    """Draw Few-NERD-style N-way K~2K-shot NER episodes from a `datasets.Dataset`.

    Args:
        dataset (`datasets.Dataset` or `NERSource`): ``tokens`` + ``ner_tags`` (IOB2 ClassLabel).
        n_way (`int`, defaults to 5): Entity types per episode.
        k_shot (`int`, defaults to 1): Each type has between K and 2K mentions in the support.
        q_query (`int`, *optional*, defaults to ``k_shot``): The same bound for the query set.
        types (`Sequence[str]`, *optional*): Allowed types (a meta-split); all by default.
        mode (`str`, defaults to ``"strict"``): ``"strict"`` applies rule (a) (Few-NERD
            compatible); ``"relaxed"`` drops it and tags the other types' mentions ``O``.
        scheme (`str`, defaults to ``"io"``): Episode tags, ``"io"`` or ``"iob2"``.
        attempts (`int`, defaults to 20): Greedy walks per episode before giving up.
        name (`str`, *optional*): Dataset name for task names and episode files.
        tokens_column, tags_column (`str`): Column names.
        **kwargs: `EpisodeSampler` arguments (``seed``, ``rank``, ``world_size``, ``tokenizer``, ...).

    Example:
        ```python
        >>> sampler = NERSampler(wnut, n_way=3, k_shot=2, mode="relaxed", seed=0,
        ...                      tokenizer=tokenizer, name="wnut16")
        >>> episode = sampler.episode(0)
        >>> episode.tag_names  # e.g. ['O', 'company', 'person', 'geo-loc']
        ```
    """

    def __init__(
        self,
        dataset: Dataset | NERSource,
        *,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int | None = None,
        types: Sequence[str] | None = None,
        mode: str = "strict",
        scheme: str = "io",
        attempts: int = 20,
        name: str | None = None,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        source = (
            dataset
            if isinstance(dataset, NERSource)
            else NERSource(dataset, name=name, tokens_column=tokens_column, tags_column=tags_column)
        )
        if mode not in NER_MODES:
            raise ValueError(f"mode={mode!r}; use one of {NER_MODES}.")
        if scheme not in NER_SCHEMES:
            raise ValueError(f"scheme={scheme!r}; use one of {NER_SCHEMES}.")
        q_query = k_shot if q_query is None else q_query
        if k_shot < 1 or q_query < 1 or attempts < 1:
            raise ValueError(
                f"k_shot={k_shot}, q_query={q_query}, attempts={attempts}; all must be >= 1."
            )
        allowed = list(source.types) if types is None else [str(t) for t in types]
        unknown = sorted(set(allowed) - set(source.types))
        if unknown:
            raise ValueError(f"Unknown entity types {unknown}; {source.name!r} has {source.types}.")
        if n_way < 1 or n_way > len(allowed):
            raise ValueError(
                f"n_way={n_way} but {len(allowed)} entity types are available: {allowed}. "
                "Lower n_way or allow more types."
            )
        totals = source.mention_totals()
        for t in allowed:
            if totals[t] < k_shot + q_query:
                raise EpisodeSamplingError(
                    f"Entity type {t!r} has {totals[t]} mentions in {source.name!r}; K={k_shot} "
                    f"support + Q={q_query} query mentions need at least {k_shot + q_query}. "
                    "Lower K/Q or leave the type out (types=...)."
                )
        self.source = source
        self.sources = {source.name: source}
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.mode, self.scheme, self.attempts = mode, scheme, attempts
        self.type_ids = np.asarray([source.types.index(t) for t in allowed], dtype=np.int64)
        self._total_mentions = source.counts.sum(axis=1)

    def greedy(
        self,
        rng: np.random.Generator,
        targets: np.ndarray,
        k: int,
        blocked: np.ndarray | None = None,
    ) -> tuple[list[int] | None, dict[str, str]]:
        """One greedy walk; returns (rows, {}) or (None, {type: why it ran out})."""
        target_counts = self.source.counts[:, targets]
        in_target = target_counts.sum(axis=1)
        eligible = in_target > 0
        if self.mode == "strict":
            eligible &= self._total_mentions == in_target  # rule (a)
        if blocked is not None:
            eligible &= ~blocked
        candidates = np.flatnonzero(eligible)
        names = [self.source.types[t] for t in targets]
        available = target_counts[candidates].sum(axis=0)
        short = {
            names[j]: f"only {int(available[j])} mentions left in eligible sentences"
            for j in np.flatnonzero(available < k)
        }
        if short:
            return None, short
        have = np.zeros(len(targets), dtype=np.int64)
        rows: list[int] = []
        order = rng.permutation(candidates)
        per_row = target_counts[order].tolist()
        for row, mentions in zip(order.tolist(), per_row, strict=True):
            after = have + mentions
            if (after > 2 * k).any():  # rule (b)
                continue
            if not any(m > 0 and h < k for m, h in zip(mentions, have, strict=True)):  # rule (c)
                continue
            rows.append(row)
            have = after
            if (have >= k).all():
                return rows, {}
        return None, {
            names[
                j
            ]: f"stuck at {int(have[j])} < K={k} after one greedy pass (the 2K cap blocked the rest)"
            for j in np.flatnonzero(have < k)
        }

    def draw(self, rng: np.random.Generator, index: int) -> EpisodeSpec:
        failures: Counter[str] = Counter()
        reasons: dict[str, str] = {}
        for _ in range(self.attempts):
            # The choice order is the episode's label permutation.
            targets = rng.choice(self.type_ids, self.n_way, replace=False)
            support, short = self.greedy(rng, targets, self.k_shot)
            where = "support"
            if support is not None:
                keys = self.source.duplicate_of
                blocked = np.isin(keys, keys[support])
                query, short = self.greedy(rng, targets, self.q_query, blocked)
                where = "query"
                if query is not None:
                    return EpisodeSpec(
                        kind="ner",
                        dataset=self.source.name,
                        fingerprint=self.source.fingerprint,
                        task=f"{self.source.name}/ner-{self.mode}",
                        label_names=[self.source.types[t] for t in targets],
                        support_rows=[int(r) for r in support],
                        query_rows=[int(r) for r in query],
                        seed=self.seed,
                        index=index,
                        scheme=self.scheme,
                        mode=self.mode,
                    )
            for t, why in short.items():
                failures[t] += 1
                reasons[t] = (
                    f"{why} ({where} set, targets {[self.source.types[i] for i in targets]})"
                )
        worst, count = failures.most_common(1)[0]
        raise EpisodeSamplingError(
            f"Could not draw a {self.n_way}-way {self.k_shot}~{2 * self.k_shot}-shot {self.mode} "
            f"NER episode from {self.source.name!r} in {self.attempts} attempts: type {worst!r} ran "
            f"out in {count} of them, e.g. {reasons[worst]}. Other shortages: "
            f"{dict(failures)}. Try mode='relaxed', a smaller k_shot/q_query/n_way, or leave "
            f"{worst!r} out (types=...)."
        )
