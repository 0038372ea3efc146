"""Choosing how to adapt from the support set alone: the frozen encoder's linear probe, no
adaptation, the algorithm's own adaptation, or test-time fine-tuning (steps, rate).

A learner meta-trained on a broad task distribution meets tasks near its training tasks (where
its own few inner steps are best and fine-tuning only adds noise) and tasks far from them (where
fine-tuning every weight wins); and on some tasks the simplest baseline, logistic regression on
the frozen encoder's embeddings, beats both. Which one a new task is cannot be known in advance,
and must never be read from query or test labels. `choose_adaptation` decides per task by
stratified cross-validation on the support set, among these candidates:

- ``"frozen-lr"``: the linear probe (`metanlp.meta.probe`, the frozen logistic-regression
  baseline's classifier) on the learner's frozen encoder;
- ``"no-adaptation"``: the algorithm's starting point with 0 inner steps (Proto-MAML: the
  prototype classifier of the frozen encoder; a zero head: chance);
- ``"adapt"``: the algorithm's own adaptation (the ``steps = 0`` fine-tuning candidate);
- fine-tuning from there with each rate in ``lrs`` for each number of steps in ``steps``.
- for a meta-trained learner, the same baselines on the original encoder it was meta-trained
  from (``AdaptPolicy.base``: its frozen logistic regression and plain fine-tuning, scored on
  the same folds as ``"base frozen-lr"``, ``"base steps=10 lr=5e-05"``), so that meta-training
  can only add where the support set can tell; the decision's ``encoder`` says which won.

1. split the support set into ``folds`` stratified folds (`StratifiedKFold`, unshuffled: every
   class in every fold, and the choice is deterministic);
2. for each fold, fit / adapt each candidate on the other folds and score the held-out fold
   (one fine-tuning trajectory per rate, so the step counts cost nothing extra; the frozen
   embeddings of the probe are computed once for the whole support set, and its fit on the
   folds weighs the examples back to the whole set's class shares,
   `metanlp.meta.probe.fold_weights`; the frozen lower layers run once for every candidate);
3. take the candidate with the best held-out accuracy averaged over folds, ties broken by the
   lower held-out cross-entropy and then by the simpler candidate (in the order above, then
   fewer steps).

With fewer than 2 support examples in some class no fold can hold it out: the policy then uses
``fallback`` (fine-tuning by default; the frozen encoder's probe for a plain encoder) and says
so in the decision. NER (token) tasks are not
cross-validated (a sentence has many labels and folds by sentence are not stratified): the
decision is the fallback too. `adapt_with_policy` chooses and then adapts on the whole support
set as chosen; `MetaLearner.adapt` calls it.

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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch import Tensor

from metanlp.meta.finetune import FineTuneConfig, finetune_fast_weights, with_frozen_prefix
from metanlp.meta.helpers import coerce_setting, task_loss
from metanlp.meta.params import select_parameters
from metanlp.meta.probe import fit_probe, fold_weights, probe_features
from metanlp.names import NAME_IDS, NAME_MASK, NAME_TRUST, NameChoice, without_names

BASELINE_CANDIDATES = ("no-adaptation", "frozen-lr")
"""Candidates besides the algorithm's adaptation and fine-tuning (`AdaptPolicy.baselines`)."""
CHOICES = (*BASELINE_CANDIDATES, "adapt", "fine-tune")
BASE_CANDIDATES = ("frozen-lr", "no-adaptation", "fine-tune")
"""What `AdaptPolicy.base` may run on the original encoder: plain baselines only."""
ENCODERS = ("learner", "base")
"""Whose encoder a decision adapts: the learner's own, or the original encoder it was
meta-trained from (`AdaptPolicy.base`)."""
FALLBACKS = ("fine-tune", "adapt", *BASELINE_CANDIDATES)
"""What `AdaptPolicy.fallback` may be: the candidate used where no fold can be held out."""


@dataclass(frozen=True)
class AdaptPolicy:
    """The candidates and the cross-validation `choose_adaptation` uses.

    Args:
        steps (`Sequence[int]`, defaults to ``(0, 4, 8)``): Fine-tuning step counts to compare;
            0 means no fine-tuning (the meta-learned adaptation alone); ``()`` leaves the
            algorithm's adaptation out (then ``baselines`` are the only candidates).
        lrs (`Sequence[float]`, defaults to ``(5e-4,)``): Encoder learning rates to compare
            (the top layers with a fresh head take larger rates than all-weight fine-tuning).
        folds (`int`, defaults to 2): Stratified support folds.
        head_lr (`float`, defaults to 5e-3), params (`str`, defaults to ``"top"``), top_layers
        (`int`, defaults to 2), head_start (`str`, defaults to ``"zero"``): Passed to every
            `FineTuneConfig`. Fine-tuning the top 2 layers on the cached output of the frozen
            lower ones costs about a third of fine-tuning every weight, which is what keeps the
            whole choice within a small fraction of SetFit's time.
        baselines (`Sequence[str]`, defaults to ``("no-adaptation", "frozen-lr")``): Further
            candidates from `BASELINE_CANDIDATES`: ``"frozen-lr"`` is logistic regression on the
            frozen encoder's normalised embeddings (`metanlp.meta.probe`), ``"no-adaptation"``
            the algorithm's start with 0 inner steps. With both, adapting is chosen only where
            the support set says it beats the simplest baselines. ``()`` leaves them out.
        probe_c (`float`, defaults to 1.0): ``C`` of the ``"frozen-lr"`` probe (scikit-learn's
            default, as the frozen logistic-regression baseline).
        max_cv_examples (`int`, *optional*, defaults to 200): With more support examples than
            this, every candidate is trained on the other folds and scored on the first fold
            only, instead of on every fold in turn (the held-out fold is then large enough to
            judge, and at 77-way 10-shot, 770 texts, the choice costs half as much). ``None``:
            always every fold.
        fallback_steps (`int`, defaults to 6), fallback_lr (`float`, defaults to 1e-4),
        fallback_params (`str`, defaults to ``"top"``), fallback_top_layers (`int`, *optional*,
            defaults to 4; ``None`` = ``top_layers``): The fine-tuning used when the support set
            cannot be cross-validated (a class with one example, or NER): the top 4 layers (on
            the cached output of the lower ones) and the head, 6 AdamW steps;
            ``fallback_steps=0`` means no fine-tuning.
        fallback (`str`, defaults to ``"fine-tune"``): What the fallback is: ``"fine-tune"`` (as
            above), ``"adapt"`` (the algorithm's adaptation alone), ``"no-adaptation"`` or
            ``"frozen-lr"`` (the linear probe: a text task that cannot be cross-validated then
            gets exactly the frozen logistic-regression baseline; token tasks, which have no
            probe, and learners reading class names fine-tune as above). A plain encoder's
            default policy uses ``"frozen-lr"`` (`metanlp.api.UNTRAINED_POLICY`).
        name_trusts (`Sequence[float]`, defaults to ``(0.0, 0.5, 1.0, 2.0)``): Factors on the
            learned name weight to cross-validate when the task has usable class names.
        names_fallback_finetune (`bool`, defaults to `False`): Whether the fallback fine-tuning
            runs when names are used and the support set cannot be cross-validated.
        base (`Sequence[str]`, defaults to ``("frozen-lr", "fine-tune")``): Candidates from
            `BASE_CANDIDATES` run on the original encoder a meta-trained learner started from
            (its ``base_model``, as `MetaLearner.from_pretrained` of it gives it), scored on the
            same folds: ``"frozen-lr"`` is exactly the frozen logistic-regression baseline,
            ``"fine-tune"`` plain fine-tuning (``base_finetune`` from the untouched encoder and a
            zero head), ``"no-adaptation"`` its prototype classifier. So meta-training can only
            add where the support set can tell. ``()`` leaves them out. A plain encoder is its
            own base: there they are not run twice.
        base_finetune (`FineTuneConfig` or `dict`, defaults to ``FineTuneConfig()``): The
            ``"fine-tune"`` base candidate: by default plain fine-tuning's settings (every
            weight, 10 AdamW steps at 5e-5, the head at 5e-3 from zeros), the same as the
            fine-tuning baseline (`metanlp.baselines.FineTuneBaseline`).

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
    baselines: tuple[str, ...] = BASELINE_CANDIDATES
    probe_c: float = 1.0
    max_cv_examples: int | None = 200
    fallback_steps: int = 6
    fallback_lr: float = 1e-4
    fallback_params: str = "top"
    fallback_top_layers: int | None = 4
    fallback: str = "fine-tune"
    name_trusts: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    names_fallback_finetune: bool = False
    base: tuple[str, ...] = ("frozen-lr", "fine-tune")
    base_finetune: FineTuneConfig = FineTuneConfig()

    def __post_init__(self) -> None:
        if isinstance(self.base_finetune, Mapping):
            object.__setattr__(self, "base_finetune", FineTuneConfig(**self.base_finetune))
        if not isinstance(self.base_finetune, FineTuneConfig):
            raise ValueError(
                f"AdaptPolicy.base_finetune={self.base_finetune!r}: give a FineTuneConfig or a "
                "dict of its fields."
            )
        object.__setattr__(self, "steps", tuple(sorted(set(self.steps))))
        object.__setattr__(self, "base", _names("base", self.base, BASE_CANDIDATES))
        object.__setattr__(self, "name_trusts", tuple(sorted(set(self.name_trusts))))
        if any(
            isinstance(t, bool) or not isinstance(t, int | float) or t < 0 for t in self.name_trusts
        ):
            raise ValueError(
                f"AdaptPolicy.name_trusts={self.name_trusts!r}: give numbers >= 0 (0 = no names)."
            )
        object.__setattr__(self, "lrs", tuple(self.lrs))
        object.__setattr__(
            self, "baselines", _names("baselines", self.baselines, BASELINE_CANDIDATES)
        )
        c = self.probe_c
        if isinstance(c, bool) or not isinstance(c, int | float) or not c > 0:
            raise ValueError(f"AdaptPolicy.probe_c={c!r} must be a number > 0.")
        cap = self.max_cv_examples
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 2):
            raise ValueError(
                f"AdaptPolicy.max_cv_examples={cap!r} must be None (every fold) or an int >= 2."
            )
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.steps):
            raise ValueError(
                f"AdaptPolicy.steps={self.steps!r}: give ints >= 0 (0 = no fine-tuning)."
            )
        if not self.steps and not self.baselines:
            raise ValueError(
                "AdaptPolicy has no candidate: give steps (0 = the algorithm's adaptation) or "
                f"baselines from {list(BASELINE_CANDIDATES)}."
            )
        if self.fallback not in FALLBACKS:
            raise ValueError(
                f"AdaptPolicy.fallback={self.fallback!r}; choose one of {list(FALLBACKS)}."
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

    def base_policy(self) -> AdaptPolicy | None:
        """The policy of the ``base`` candidates on the original encoder (``None``: none),
        run with 0 inner steps: step count 0 is its prototype classifier, and fine-tuning
        starts from the untouched encoder."""
        if not self.base:
            return None
        ft = self.base_finetune
        steps = (0,) if "no-adaptation" in self.base else ()
        steps += (ft.steps,) if "fine-tune" in self.base else ()
        return dataclasses.replace(
            self, steps=steps, lrs=(ft.lr,), head_lr=ft.head_lr, params=ft.params,
            top_layers=ft.top_layers, head_start=ft.head_start,
            baselines=("frozen-lr",) if "frozen-lr" in self.base else (), base=(),
        )  # fmt: skip

    @classmethod
    def coerce(cls, value: Any) -> AdaptPolicy | None:
        """``None`` / ``False`` -> no policy; ``True`` -> defaults; a mapping -> its fields."""
        return coerce_setting(cls, value, "policy")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _names(field_name: str, value: Any, allowed: Sequence[str]) -> tuple[str, ...]:
    """``value`` as a tuple of candidate names from ``allowed``, or a clear error."""
    if isinstance(value, str):
        raise ValueError(
            f"AdaptPolicy.{field_name}={value!r}: give a list of names from {list(allowed)}, "
            "e.g. ['frozen-lr'], or [] for none."
        )
    names = tuple(value)
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ValueError(
            f"AdaptPolicy.{field_name} has unknown candidate(s) {unknown}; choose from "
            f"{list(allowed)}."
        )
    return names


@dataclass
class AdaptDecision:
    """What the policy chose for one task, and the cross-validation scores it chose from.

    Args:
        finetune (`FineTuneConfig` or `None`): The test-time fine-tuning to run (``None``: none).
        reason (`str`): ``"cross-validation"`` or why the fallback was used.
        scores (`dict`): candidate -> ``{"accuracy", "loss"}`` held-out means; the keys are
            ``"frozen-lr"``, ``"no-adaptation"`` and ``"steps=S lr=R"`` (``steps=0 lr=0``: the
            algorithm's adaptation alone).
        seconds (`float`): Time the choice took.
        choice (`str`, *optional*): One of `CHOICES`: ``"frozen-lr"``, ``"no-adaptation"``,
            ``"adapt"`` or ``"fine-tune"``; defaults from ``finetune``.
        names (`NameChoice`, *optional*): Whether and how much the classes' names were used
            (`metanlp.names`); ``None`` for a learner that does not read names.
        encoder (`str`, defaults to ``"learner"``): One of `ENCODERS`: ``"base"`` when the
            chosen candidate runs on the original encoder (`AdaptPolicy.base`; its scores are
            the keys starting with ``"base "``).
        best (`dict`, *optional*): The chosen candidate's held-out ``{"accuracy", "loss"}``
            (``None`` for a fallback).
    """

    finetune: FineTuneConfig | None
    reason: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    choice: str | None = None
    names: NameChoice | None = None
    encoder: str = "learner"
    best: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(
                f"AdaptDecision.encoder={self.encoder!r}; choose one of {list(ENCODERS)}."
            )
        if self.choice is None:
            self.choice = "adapt" if self.finetune is None else "fine-tune"
        if self.choice not in CHOICES:
            raise ValueError(
                f"AdaptDecision.choice={self.choice!r}; choose one of {list(CHOICES)}."
            )
        if (self.choice == "fine-tune") != (self.finetune is not None):
            raise ValueError(
                f"AdaptDecision: choice={self.choice!r} with finetune={self.finetune!r}; only "
                "'fine-tune' has a fine-tuning config."
            )

    def summary(self) -> str:
        what = {
            "frozen-lr": "logistic regression on the frozen encoder",
            "no-adaptation": "no adaptation (0 inner steps)",
            "adapt": "no fine-tuning",
        }.get(str(self.choice))
        if self.finetune is not None:
            what = f"fine-tune {self.finetune.steps} steps at lr {self.finetune.lr:g}"
        if self.encoder == "base":
            what = f"{what}, on the original encoder"
        names = "" if self.names is None else f"; {self.names.summary()}"
        return f"{what} ({self.reason}, {self.seconds:.1f} s){names}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "finetune": None if self.finetune is None else self.finetune.to_dict(),
            "reason": self.reason,
            "scores": self.scores,
            "seconds": round(self.seconds, 3),
            "names": None if self.names is None else self.names.to_dict(),
            "encoder": self.encoder,
            "best": self.best,
        }


def stratified_folds(labels: Sequence[int], folds: int) -> list[list[int]] | None:
    """Held-out row indices of ``folds`` stratified folds (`sklearn.model_selection.StratifiedKFold`,
    unshuffled, so deterministic) with every class in every fold; ``None`` if some class has
    fewer than ``folds`` rows."""
    counts = Counter(int(y) for y in labels)
    if min(counts.values()) < folds:
        return None
    split = StratifiedKFold(n_splits=folds).split(np.zeros(len(labels)), list(labels))
    return [sorted(int(i) for i in held) for _, held in split]


def _rows(batch: Mapping[str, Tensor], rows: list[int]) -> dict[str, Tensor]:
    index = torch.as_tensor(rows, dtype=torch.long)
    return {
        k: v.index_select(0, index.to(v.device)) if torch.is_tensor(v) and v.dim() else v
        for k, v in batch.items()
    }


def _score(algorithm: Any, fast: Mapping[str, Tensor], val: Mapping[str, Tensor], n: int):
    inputs = {k: v for k, v in val.items() if k != "labels"}  # the cached prefix too
    return _accuracy_loss(algorithm.predict_logits(fast, inputs, n), val["labels"])


def _accuracy_loss(logits: Tensor, labels: Tensor) -> tuple[float, float]:
    labels = labels.to(logits.device)
    accuracy = float((logits.argmax(-1) == labels).float().mean())
    return accuracy, float(task_loss(logits, labels))


_RANK = {"no-adaptation": 0, "frozen-lr": 1}  # simpler first on ties; then adapt, fine-tune


def choose_adaptation(
    algorithm: Any,
    support: Mapping[str, Tensor],
    n_way: int,
    policy: AdaptPolicy,
    *,
    steps: int | None = None,
    token_task: bool = False,
    features: Tensor | None = None,
    names: NameChoice | None = None,
) -> AdaptDecision:
    """Pick how to adapt to one task by cross-validation on its support set.

    Args:
        algorithm (`MetaAlgorithm`): Its ``adapt`` (the meta-learned adaptation),
            ``predict_logits`` and model (the probe's frozen encoder) are used; nothing of it
            is modified.
        support (`dict`): The encoded support set with ``labels``; the only data read.
        n_way (`int`): Classes of the task.
        policy (`AdaptPolicy`): Candidates and folds.
        steps (`int`, *optional*): Inner steps of the algorithm's adaptation.
        token_task (`bool`, defaults to `False`): NER; uses the fallback.
        features (`Tensor`, *optional*): The support's `probe_features`, when already computed.
        names (`NameChoice`, *optional*): The task's usable names, encoded in ``support``
            (`metanlp.names.with_label_names`); their trust factor is cross-validated too.

    Returns:
        `AdaptDecision`.
    """
    began = time.perf_counter()
    named = {k: support[k] for k in (NAME_IDS, NAME_MASK) if k in support}
    trusts = policy.name_trusts if names is not None and names.used and named else ()
    support = without_names(support)

    def fallback(reason: str, names_only: bool = False) -> AdaptDecision:
        kind = policy.fallback
        if kind == "frozen-lr" and (token_task or trusts):
            kind = "fine-tune"  # no probe for tags; a learner reading names uses them instead
        tune = kind == "fine-tune" and policy.fallback_steps > 0 and not names_only
        ft = policy.fallback_config() if tune else None
        chosen_names = names
        if trusts:
            ft = ft if policy.names_fallback_finetune else None
            why = "fine-tuning from a zero head follows" if ft else "the meta-learned weight"
            chosen_names = dataclasses.replace(names, trust=1.0, reason=f"{names.reason}; {why}")
        choice = "fine-tune" if ft is not None else ("adapt" if kind == "fine-tune" else kind)
        return AdaptDecision(
            ft, reason, {}, time.perf_counter() - began, choice, names=chosen_names
        )

    if token_task:
        return fallback("fallback: token tasks are not cross-validated")
    labels = support["labels"]
    missing = n_way - len(set(labels.tolist()))
    if missing and trusts:  # only the names stand for those classes: nothing else can serve
        return fallback(f"{missing} class(es) known by name alone", names_only=True)
    folds = stratified_folds(labels.tolist(), policy.folds)
    if folds is None:
        return fallback(f"fallback: a class has fewer than {policy.folds} support examples")
    support = with_policy_prefix(algorithm, support, policy)
    if "frozen-lr" in policy.baselines and features is None:
        features = probe_features(algorithm.model, support)
    fine_steps = [s for s in policy.steps if s > 0]
    # On a large support set one held-out fold (half of it) judges every candidate.
    scored = folds
    if policy.max_cv_examples is not None and len(labels) > policy.max_cv_examples:
        scored = folds[:1]
    # Candidate key: (rank, fine-tuning steps, rate, name trust); trust -1 = names not read.
    no_trust = -1.0
    totals: dict[tuple[int, int, float, float], list[float]] = {}

    def add(key: tuple[int, int, float, float], accuracy: float, loss: float) -> None:
        acc_loss = totals.setdefault(key, [0.0, 0.0])
        acc_loss[0] += accuracy / len(scored)
        acc_loss[1] += loss / len(scored)

    adapt_rank = len(_RANK)
    no_adaptation = "no-adaptation" in policy.baselines and algorithm.eval_steps(steps) > 0
    for held_out in scored:
        keep = sorted(set(range(len(labels))) - set(held_out))
        train, val = _rows(support, keep), _rows(support, held_out)
        if features is not None and "frozen-lr" in policy.baselines:
            train_y, weight = labels[torch.as_tensor(keep)], fold_weights(labels, keep)
            probe = fit_probe(
                features[keep], train_y, n_way, C=policy.probe_c, sample_weight=weight
            )
            logits = torch.nn.functional.linear(features[held_out], *probe.values())
            add((_RANK["frozen-lr"], 0, 0.0, no_trust), *_accuracy_loss(logits, labels[held_out]))
        if no_adaptation:
            start = algorithm.adapt(train, n_way, steps=0)
            add((_RANK["no-adaptation"], 0, 0.0, no_trust), *_score(algorithm, start, val, n_way))
        if not policy.steps:
            continue
        start = algorithm.adapt({**train, **named}, n_way, steps=steps)
        for trust in trusts:
            trusted = {**train, **named, NAME_TRUST: torch.tensor(float(trust))}
            weights = algorithm.adapt(trusted, n_way, steps=steps)
            add((adapt_rank, 0, 0.0, float(trust)), *_score(algorithm, weights, val, n_way))
        if 0 in policy.steps and not trusts:
            add((adapt_rank, 0, 0.0, no_trust), *_score(algorithm, start, val, n_way))
        for lr in policy.lrs if fine_steps else ():

            def record(step: int, weights: Mapping[str, Tensor], lr: float = lr, val=val) -> None:
                if step in fine_steps:
                    add((adapt_rank, step, lr, no_trust), *_score(algorithm, weights, val, n_way))

            config = policy.finetune_config(max(fine_steps), lr)
            finetune_fast_weights(algorithm, train, n_way, config, start, on_step=record)
    best = max(
        totals,
        key=lambda key: (
            totals[key][0], -totals[key][1], -key[0], -key[1], -key[2], -abs(key[3] - 1.0),
        ),
    )  # fmt: skip
    rank_names = {rank: name for name, rank in _RANK.items()}
    scores = {
        rank_names.get(rank, f"steps={s} lr={lr:g}")
        + (f" names={t:g}" if t != no_trust else ""): {
            "accuracy": round(a, 4), "loss": round(c, 4),
        }
        for (rank, s, lr, t), (a, c) in sorted(totals.items())
    }  # fmt: skip
    rank, step, lr, trust = best
    ft = policy.finetune_config(step, lr) if step > 0 else None
    choice = rank_names.get(rank, "adapt" if ft is None else "fine-tune")
    reason = f"{len(folds)}-fold CV on the support set"
    if len(scored) < len(folds):
        reason = f"1 of {len(folds)} folds held out ({len(labels)} support examples)"
    chosen_names = names
    if trusts:
        why = (
            f"CV chose trust {trust:g}"
            if trust != no_trust
            else f"{choice} won the CV (it does not read names)"
        )
        chosen_names = dataclasses.replace(
            names, used=trust > 0, trust=max(trust, 0.0), reason=f"{names.reason}; {why}",
            scores={k: v for k, v in scores.items() if "names=" in k},
        )  # fmt: skip
    best_score = {k: round(v, 4) for k, v in zip(("accuracy", "loss"), totals[best], strict=True)}
    return AdaptDecision(
        ft, reason, scores, time.perf_counter() - began, choice, names=chosen_names,
        best=best_score,
    )  # fmt: skip


def with_policy_prefix(
    algorithm: Any, support: Mapping[str, Tensor], policy: AdaptPolicy
) -> Mapping[str, Tensor]:
    """``support`` with the output of the layers no candidate trains, computed once: the
    algorithm's inner set and the fine-tuned top layers run on it (exact, and for the top two
    layers of six about a third of the cost)."""
    names = list(algorithm.inner_names)
    if any(s > 0 for s in policy.steps):
        names += select_parameters(algorithm.model, policy.params, top_layers=policy.top_layers)
    return with_frozen_prefix(algorithm, algorithm.to_device(support), names)


def adapt_with_policy(
    algorithm: Any,
    support: Mapping[str, Tensor],
    n_way: int,
    policy: AdaptPolicy,
    *,
    steps: int | None = None,
    token_task: bool = False,
    names: NameChoice | None = None,
    base: Any = None,
) -> tuple[dict[str, Tensor], AdaptDecision]:
    """`choose_adaptation`, then adapt on the whole support set as chosen.

    Args:
        base (`MetaAlgorithm`, *optional*): The original encoder's algorithm (same tokenizer):
            `AdaptPolicy.base`'s candidates run on it, on the same folds, and the best
            held-out accuracy over both decides (ties: the lower loss, then the learner).

    Returns:
        ``(fast weights, decision)``: for ``"frozen-lr"`` the probe's tensors
        (``probe.weight``, ``probe.bias``, `metanlp.meta.probe`); otherwise the algorithm's
        adaptation (0 inner steps for ``"no-adaptation"``; with the chosen name trust when the
        support carries names), fine-tuned when chosen. With ``decision.encoder == "base"``
        they are ``base``'s fast weights.
    """
    raw = without_names(support)
    plain, support, features = _prepared(algorithm, support, policy, token_task)
    decision = choose_adaptation(
        algorithm, support, n_way, policy, steps=steps, token_task=token_task,
        features=features, names=names,
    )  # fmt: skip
    base_policy = policy.base_policy()
    if base is not None and base_policy is not None and decision.best is not None:
        base_plain, base_support, base_features = _prepared(base, raw, base_policy, token_task)
        other = choose_adaptation(
            base, base_support, n_way, base_policy, steps=0, features=base_features
        )  # fmt: skip
        if other.choice == "adapt":  # 0 inner steps: the prototype classifier
            other = dataclasses.replace(other, choice="no-adaptation")
        scores = {**decision.scores, **{f"base {k}": v for k, v in other.scores.items()}}
        seconds = decision.seconds + other.seconds
        mine, theirs = decision.best, other.best  # both cross-validated: the same folds
        if (theirs["accuracy"], -theirs["loss"]) > (mine["accuracy"], -mine["loss"]):
            names_off = None
            if decision.names is not None:
                names_off = dataclasses.replace(
                    decision.names, used=False, trust=0.0,
                    reason=f"{decision.names.reason}; the original encoder won the CV",
                )  # fmt: skip
            chosen = dataclasses.replace(
                other, scores=scores, seconds=seconds, encoder="base", names=names_off
            )
            return _adapt_as(base, base_plain, base_support, n_way, chosen, base_policy,
                             0, base_features), chosen  # fmt: skip
        decision = dataclasses.replace(decision, scores=scores, seconds=seconds)
    return _adapt_as(algorithm, plain, support, n_way, decision, policy, steps, features), decision


def _prepared(
    algorithm: Any, support: Mapping[str, Tensor], policy: AdaptPolicy, token_task: bool
) -> tuple[Mapping[str, Tensor], Mapping[str, Tensor], Tensor | None]:
    """``(support without names, support, probe features)``, where for text tasks the frozen
    lower layers ran once for every candidate and the final adaptation."""
    plain = without_names(support)
    features = None
    if not token_task:
        plain = with_policy_prefix(algorithm, plain, policy)
        support = {**support, **plain}
        if "frozen-lr" in policy.baselines:
            features = probe_features(algorithm.model, plain)
    return plain, support, features


def _adapt_as(
    algorithm: Any,
    plain: Mapping[str, Tensor],
    support: Mapping[str, Tensor],
    n_way: int,
    decision: AdaptDecision,
    policy: AdaptPolicy,
    steps: int | None,
    features: Tensor | None,
) -> dict[str, Tensor]:
    """Adapt on the whole support set as ``decision`` says."""
    if decision.choice == "frozen-lr":
        if features is None:  # the fallback, with the probe left out of the candidates
            features = probe_features(algorithm.model, plain)
        return fit_probe(features, plain["labels"], n_way, C=policy.probe_c)
    if decision.choice == "no-adaptation":
        steps = 0
    start = plain
    if decision.names is not None and decision.names.used and decision.finetune is None:
        start = {**support, NAME_TRUST: torch.tensor(float(decision.names.trust))}
    fast = algorithm.adapt(start, n_way, steps=steps)
    if decision.finetune is not None:
        fast = finetune_fast_weights(algorithm, plain, n_way, decision.finetune, fast)
    return fast
