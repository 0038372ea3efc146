"""Choosing how to adapt from the support set alone: test-time fine-tuning or not, steps, rate.

A learner meta-trained on a broad task distribution meets tasks near its training tasks (where
its own few inner steps are best and fine-tuning only adds noise) and tasks far from them (where
fine-tuning every weight wins). Which one a new task is cannot be known in advance, and must
never be read from query or test labels. `choose_adaptation` decides per task by stratified
cross-validation on the support set:

1. split the support set into ``folds`` stratified folds (every class in every fold, a fixed
   seed, so the choice is deterministic);
2. for each fold, adapt on the other folds with the algorithm's own adaptation, score the held-out
   fold (the ``steps = 0`` candidate: no fine-tuning), then fine-tune from there with each rate in
   ``lrs`` and score the held-out fold after each number of steps in ``steps`` (one trajectory per
   rate, so the step counts cost nothing extra);
3. take the candidate with the best held-out accuracy averaged over folds, ties broken by the
   lower held-out cross-entropy and then by fewer steps.

With fewer than 2 support examples in some class no fold can hold it out: the policy then uses
``fallback`` (fine-tuning, or none) and says so in the decision. NER (token) tasks are not
cross-validated (a sentence has many labels and folds by sentence are not stratified): the
decision is the fallback too.

When the support batch carries the classes' names (`metanlp.names`, a learner with
``ProtoNetConfig(names=True)``), the no-fine-tuning candidate is scored once per factor in
``name_trusts`` on the learned name weight (0: names ignored), and the decision's ``names``
records the factor chosen. Where the support set cannot be cross-validated (one shot), the names
are used at factor 1 (the meta-learned weight) and ``names_fallback_finetune`` says whether the
fallback fine-tuning still runs (by default not: its head starts from zeros and would discard
the names).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from metanlp.meta.finetune import FineTuneConfig, finetune_fast_weights, with_frozen_prefix
from metanlp.meta.helpers import coerce_setting, task_loss
from metanlp.meta.params import select_parameters
from metanlp.names import NAME_IDS, NAME_MASK, NAME_TRUST, NameChoice


@dataclass(frozen=True)
class AdaptPolicy:
    """The candidates and the cross-validation `choose_adaptation` uses.

    Args:
        steps (`Sequence[int]`, defaults to ``(0, 4, 8)``): Fine-tuning step counts to compare;
            0 means no fine-tuning (the meta-learned adaptation alone).
        lrs (`Sequence[float]`, defaults to ``(5e-4,)``): Encoder learning rates to compare
            (the top layers with a fresh head take larger rates than all-weight fine-tuning).
        folds (`int`, defaults to 2): Stratified support folds.
        head_lr (`float`, defaults to 5e-3), params (`str`, defaults to ``"top"``), top_layers
        (`int`, defaults to 2), head_start (`str`, defaults to ``"zero"``): Passed to every
            `FineTuneConfig`. Fine-tuning the top 2 layers on the cached output of the frozen
            lower ones costs about a third of fine-tuning every weight, which is what keeps the
            whole choice within a small fraction of SetFit's time.
        fallback_steps (`int`, defaults to 6), fallback_lr (`float`, defaults to 1e-4),
        fallback_params (`str`, defaults to ``"top"``), fallback_top_layers (`int`, *optional*,
            defaults to 4; ``None`` = ``top_layers``): The fine-tuning used when the support set
            cannot be cross-validated (a class with one example, or NER): the top 4 layers (on
            the cached output of the lower ones) and the head, 6 AdamW steps;
            ``fallback_steps=0`` means no fine-tuning.
        name_trusts (`Sequence[float]`, defaults to ``(0.0, 0.5, 1.0, 2.0)``): Factors on the
            learned name weight to cross-validate when the task has usable class names.
        names_fallback_finetune (`bool`, defaults to `False`): Whether the fallback fine-tuning
            runs when names are used and the support set cannot be cross-validated.

    The defaults were chosen on validation tasks only (tweets of the ``airlines`` domain,
    BIG-bench ``language_identification`` and ``multiemo``, 12 episodes each;
    `benchmarks/policy_validation.py`): this fallback was 0.3-2.0 points above the plain
    fine-tuning baseline's settings (every weight, 10 steps at 5e-5) in half of its time, and
    one rate with at most 8 steps matched the earlier grid of two rates and 16 steps (tweets,
    5 shots) in under half of its time.

    Example:
        ```python
        >>> clf = learner.adapt(texts, labels, policy=AdaptPolicy(steps=(0, 10), lrs=(5e-5,)))
        >>> clf.decision.summary()
        'fine-tune 10 steps at lr 5e-05 (2-fold CV on the support set: ...)'
        ```
    """

    steps: tuple[int, ...] = (0, 4, 8)
    lrs: tuple[float, ...] = (5e-4,)
    folds: int = 2
    head_lr: float = 5e-3
    params: str = "top"
    top_layers: int = 2
    head_start: str = "zero"
    fallback_steps: int = 6
    fallback_lr: float = 1e-4
    fallback_params: str = "top"
    fallback_top_layers: int | None = 4
    name_trusts: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    names_fallback_finetune: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(sorted(set(self.steps))))
        object.__setattr__(self, "name_trusts", tuple(sorted(set(self.name_trusts))))
        if any(
            isinstance(t, bool) or not isinstance(t, int | float) or t < 0 for t in self.name_trusts
        ):
            raise ValueError(
                f"AdaptPolicy.name_trusts={self.name_trusts!r}: give numbers >= 0 (0 = no names)."
            )
        object.__setattr__(self, "lrs", tuple(self.lrs))
        if not self.steps or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.steps
        ):
            raise ValueError(
                f"AdaptPolicy.steps={self.steps!r}: give ints >= 0 (0 = no fine-tuning)."
            )
        if any(s > 0 for s in self.steps) and not self.lrs:
            raise ValueError("AdaptPolicy.lrs is empty; give at least one learning rate.")
        if any(isinstance(r, bool) or not isinstance(r, int | float) or r <= 0 for r in self.lrs):
            raise ValueError(f"AdaptPolicy.lrs={self.lrs!r}: learning rates must be > 0.")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"AdaptPolicy.folds={self.folds!r} must be an int >= 2.")
        if not isinstance(self.fallback_steps, int) or self.fallback_steps < 0:
            raise ValueError(f"AdaptPolicy.fallback_steps={self.fallback_steps!r} must be >= 0.")
        top = self.fallback_top_layers
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise ValueError(
                f"AdaptPolicy.fallback_top_layers={top!r} must be None (= top_layers) or an int >= 1."
            )
        # The fine-tuning settings are checked where they are defined.
        self.finetune_config(1, self.lrs[0] if self.lrs else self.fallback_lr)
        self.fallback_config(1)

    def finetune_config(
        self, steps: int, lr: float, params: str | None = None, top_layers: int | None = None
    ) -> FineTuneConfig:
        return FineTuneConfig(
            steps=steps, lr=lr, head_lr=self.head_lr, params=params or self.params,
            top_layers=self.top_layers if top_layers is None else top_layers, head_start=self.head_start,
        )  # fmt: skip

    def fallback_config(self, steps: int | None = None) -> FineTuneConfig:
        """The fine-tuning used where the support set cannot be cross-validated."""
        return self.finetune_config(
            self.fallback_steps if steps is None else steps, self.fallback_lr,
            self.fallback_params, self.fallback_top_layers,
        )  # fmt: skip

    @classmethod
    def coerce(cls, value: Any) -> AdaptPolicy | None:
        """``None`` / ``False`` -> no policy; ``True`` -> defaults; a mapping -> its fields."""
        return coerce_setting(cls, value, "policy")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class AdaptDecision:
    """What the policy chose for one task, and the cross-validation scores it chose from.

    Args:
        finetune (`FineTuneConfig` or `None`): The test-time fine-tuning to run (``None``: none).
        reason (`str`): ``"cross-validation"`` or why the fallback was used.
        scores (`dict`): ``"steps=S lr=R"`` -> ``{"accuracy", "loss"}`` held-out means.
        seconds (`float`): Time the choice took.
        names (`NameChoice`, *optional*): Whether and how much the classes' names were used
            (`metanlp.names`); ``None`` for a learner that does not read names.
    """

    finetune: FineTuneConfig | None
    reason: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    names: NameChoice | None = None

    def summary(self) -> str:
        what = (
            "no fine-tuning"
            if self.finetune is None
            else f"fine-tune {self.finetune.steps} steps at lr {self.finetune.lr:g}"
        )
        names = "" if self.names is None else f"; {self.names.summary()}"
        return f"{what} ({self.reason}, {self.seconds:.1f} s){names}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "finetune": None if self.finetune is None else self.finetune.to_dict(),
            "reason": self.reason,
            "scores": self.scores,
            "seconds": round(self.seconds, 3),
            "names": None if self.names is None else self.names.to_dict(),
        }


def stratified_folds(labels: Sequence[int], folds: int) -> list[list[int]] | None:
    """Row indices of ``folds`` folds with every class in every fold; ``None`` if impossible.

    Deterministic: class ``c``'s rows, in order, go round-robin to folds starting at ``c``.
    """
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    if min(len(rows) for rows in by_class.values()) < folds:
        return None
    out: list[list[int]] = [[] for _ in range(folds)]
    for c, rows in sorted(by_class.items()):
        for j, i in enumerate(rows):
            out[(j + c) % folds].append(i)
    return [sorted(f) for f in out]


def _rows(batch: Mapping[str, Tensor], rows: list[int]) -> dict[str, Tensor]:
    index = torch.as_tensor(rows, dtype=torch.long)
    return {
        k: v.index_select(0, index.to(v.device)) if torch.is_tensor(v) and v.dim() else v
        for k, v in batch.items()
    }


def _score(algorithm: Any, fast: Mapping[str, Tensor], val: Mapping[str, Tensor], n: int):
    inputs = {k: v for k, v in val.items() if k != "labels"}  # the cached prefix too
    logits = algorithm.predict_logits(fast, inputs, n)
    labels = val["labels"].to(logits.device)
    accuracy = float((logits.argmax(-1) == labels).float().mean())
    return accuracy, float(task_loss(logits, labels))


def choose_adaptation(
    algorithm: Any,
    support: Mapping[str, Tensor],
    n_way: int,
    policy: AdaptPolicy,
    *,
    steps: int | None = None,
    token_task: bool = False,
    names: NameChoice | None = None,
) -> AdaptDecision:
    """Pick the test-time fine-tuning for one task by cross-validation on its support set.

    Args:
        algorithm (`MetaAlgorithm`): Its ``adapt`` (the meta-learned adaptation) and
            ``predict_logits`` are used; nothing of it is modified.
        support (`dict`): The encoded support set with ``labels``; the only data read.
        n_way (`int`): Classes of the task.
        policy (`AdaptPolicy`): Candidates and folds.
        steps (`int`, *optional*): Inner steps of the algorithm's adaptation.
        token_task (`bool`, defaults to `False`): NER; uses the fallback.
        names (`NameChoice`, *optional*): The task's usable names, encoded in ``support``
            (`metanlp.names.with_label_names`); their trust factor is cross-validated too.

    Returns:
        `AdaptDecision`.
    """
    began = time.perf_counter()
    named = {k: support[k] for k in (NAME_IDS, NAME_MASK) if k in support}
    trusts = policy.name_trusts if names is not None and names.used and named else ()
    support = {k: v for k, v in support.items() if k not in (NAME_IDS, NAME_MASK, NAME_TRUST)}

    def fallback(reason: str) -> AdaptDecision:
        ft = policy.fallback_config() if policy.fallback_steps > 0 else None
        choice = names
        if trusts:
            ft = ft if policy.names_fallback_finetune else None
            why = "fine-tuning from a zero head follows" if ft else "the meta-learned weight"
            choice = dataclasses.replace(names, trust=1.0, reason=f"{names.reason}; {why}")
        return AdaptDecision(ft, reason, {}, time.perf_counter() - began, choice)

    if token_task:
        return fallback("fallback: token tasks are not cross-validated")
    folds = stratified_folds(support["labels"].tolist(), policy.folds)
    if folds is None:
        return fallback(f"fallback: a class has fewer than {policy.folds} support examples")
    if policy.steps != (0,):
        # The top layers' fine-tuning runs on the frozen lower layers' output, computed once.
        tuned = select_parameters(algorithm.model, policy.params, top_layers=policy.top_layers)
        support = with_frozen_prefix(
            algorithm, algorithm.to_device(support), [*algorithm.inner_names, *tuned]
        )
    totals: dict[tuple[int, float, float], list[float]] = {}
    no_trust = -1.0  # fine-tuning candidates: their zero head ignores the names

    def add(step: int, lr: float, accuracy: float, loss: float, trust: float = no_trust) -> None:
        acc_loss = totals.setdefault((step, lr, trust), [0.0, 0.0])
        acc_loss[0] += accuracy / len(folds)
        acc_loss[1] += loss / len(folds)

    fine_steps = [s for s in policy.steps if s > 0]
    for held_out in folds:
        keep = sorted(set(range(len(support["labels"]))) - set(held_out))
        train, val = _rows(support, keep), _rows(support, held_out)
        start = algorithm.adapt({**train, **named}, n_way, steps=steps)
        for trust in trusts:
            trusted = {**train, **named, NAME_TRUST: torch.tensor(float(trust))}
            add(
                0,
                0.0,
                *_score(algorithm, algorithm.adapt(trusted, n_way, steps=steps), val, n_way),
                trust,
            )
        if 0 in policy.steps and not trusts:
            add(0, 0.0, *_score(algorithm, start, val, n_way))
        for lr in policy.lrs if fine_steps else ():

            def record(step: int, weights: Mapping[str, Tensor], lr: float = lr, val=val) -> None:
                if step in fine_steps:
                    add(step, lr, *_score(algorithm, weights, val, n_way))

            config = policy.finetune_config(max(fine_steps), lr)
            finetune_fast_weights(algorithm, train, n_way, config, start, on_step=record)
    best = max(
        totals,
        key=lambda key: (totals[key][0], -totals[key][1], -key[0], -key[1], -abs(key[2] - 1.0)),
    )
    scores = {
        f"steps={s} lr={lr:g}" + (f" names={t:g}" if t != no_trust else ""): {
            "accuracy": round(a, 4), "loss": round(c, 4),
        }
        for (s, lr, t), (a, c) in sorted(totals.items())
    }  # fmt: skip
    step, lr, trust = best
    ft = policy.finetune_config(step, lr) if step > 0 else None
    reason = f"{len(folds)}-fold CV on the support set"
    choice = names
    if trusts:
        used = trust > 0
        why = (
            f"{len(folds)}-fold CV chose trust {trust:g}"
            if trust != no_trust
            else "fine-tuning from a zero head won the CV"
        )
        choice = dataclasses.replace(
            names, used=used, trust=max(trust, 0.0), reason=f"{names.reason}; {why}",
            scores={k: v for k, v in scores.items() if "names=" in k},
        )  # fmt: skip
    return AdaptDecision(ft, reason, scores, time.perf_counter() - began, choice)
