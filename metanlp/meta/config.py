"""`MetaConfig`: the options every meta-learning algorithm shares, validated on creation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from metanlp.meta import efficient
from metanlp.meta.inner import INNER_OPTIMIZERS
from metanlp.meta.params import ParamSelection
from metanlp.spec import did_you_mean


@dataclass
class MetaConfig:
    """Options shared by the gradient-based meta-learners.

    Args:
        inner_steps (`int`, defaults to 5): inner steps k during meta-training.
        eval_inner_steps (`int`, *optional*): steps for `adapt` at evaluation (default k).
        inner_lr (`float`, defaults to 1e-3): inner rate α (initial value when it is learned).
        params (`str` or `list[str]`, defaults to ``"all"``): adapted tensors, a value of
            `metanlp.meta.params.PARAMETER_SETS` or explicit names.
        outer_params (`str` or `list[str]`, *optional*): meta-learned tensors when they differ
            from ``params`` (e.g. inner ``"lora"``, outer ``"all"``).
        top_layers (`int`, defaults to 2): layers taken by ``"top"``.
        first_order (`bool`, defaults to False): drop second derivatives (FOMAML).
        inner_optimizer (`str`, defaults to ``"sgd"``): ``"sgd"``, ``"momentum"`` or ``"adam"``
            where the algorithm allows it.
        inner_momentum (`float`, defaults to 0.9), inner_betas (`tuple`, defaults to
            ``(0.9, 0.999)``), inner_eps (`float`, defaults to 1e-8): inner optimiser settings.
        train_dropout (`bool`, defaults to True): dropout active in meta-training inner/outer
            loops; evaluation-time adaptation always runs in eval mode (deterministic).
        grad_scale (`float`, *optional*): inner-loop loss scale for fp16 (see `inner_loop`).
        checkpointing (`str`, defaults to ``"none"``), frozen_prefix_cache (`str`, defaults to
            ``"auto"``), task_batching (`str`, defaults to ``"loop"``): exact speed/memory
            options, see `metanlp.meta.efficient`.

    Example:
        ```python
        >>> MetaConfig(params="lora", inner_steps=3, inner_lr=1e-2)
        ```
    """

    inner_steps: int = 5
    eval_inner_steps: int | None = None
    inner_lr: float = 1e-3
    params: ParamSelection = "all"
    outer_params: ParamSelection | None = None
    top_layers: int = 2
    first_order: bool = False
    inner_optimizer: str = "sgd"
    inner_momentum: float = 0.9
    inner_betas: tuple[float, float] = (0.9, 0.999)
    inner_eps: float = 1e-8
    train_dropout: bool = True
    grad_scale: float | None = None
    checkpointing: str = "none"
    frozen_prefix_cache: str = "auto"
    task_batching: str = "loop"

    allowed_inner_optimizers: ClassVar[tuple[str, ...]] = INNER_OPTIMIZERS
    min_inner_steps: ClassVar[int] = 1
    """Fewest meta-training inner steps: with none, a MAML-style meta-gradient never sees the
    support set. Algorithms whose zero-step classifier uses it (prototypes) allow 0."""

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"{type(self).__name__}: {msg}")

        need(
            _is_int(self.inner_steps) and self.inner_steps >= 0,
            f"inner_steps={self.inner_steps!r} must be an int >= 0.",
        )
        need(
            self.inner_steps >= self.min_inner_steps,
            f"inner_steps=0 means no adaptation: the meta-gradient would never see the support "
            f"set. Use inner_steps >= {self.min_inner_steps}, or 'protonet' / 'protomaml', whose "
            "zero-step classifier is built from the support prototypes.",
        )
        need(self.eval_inner_steps is None or (_is_int(self.eval_inner_steps) and self.eval_inner_steps >= 0),
             f"eval_inner_steps={self.eval_inner_steps!r} must be None or an int >= 0.")  # fmt: skip
        need(
            isinstance(self.inner_lr, (int, float))
            and not isinstance(self.inner_lr, bool)
            and math.isfinite(self.inner_lr)
            and self.inner_lr > 0,
            f"inner_lr={self.inner_lr!r} must be a number > 0 and finite.",
        )
        need(
            _is_int(self.top_layers) and self.top_layers >= 1,
            f"top_layers={self.top_layers!r} must be an int >= 1.",
        )
        need(self.inner_optimizer in self.allowed_inner_optimizers,
             f"inner_optimizer={self.inner_optimizer!r} is not allowed here; use one of {self.allowed_inner_optimizers}.")  # fmt: skip
        need(
            0 <= self.inner_momentum < 1,
            f"inner_momentum={self.inner_momentum!r} must be in [0, 1).",
        )
        self.inner_betas = tuple(self.inner_betas)  # JSON gives lists back
        need(len(self.inner_betas) == 2 and all(0 <= b < 1 for b in self.inner_betas),
             f"inner_betas={self.inner_betas!r} must be two numbers in [0, 1).")  # fmt: skip
        need(
            self.grad_scale is None or self.grad_scale > 0,
            f"grad_scale={self.grad_scale!r} must be None or > 0.",
        )
        efficient.check_options(self.checkpointing, self.frozen_prefix_cache, self.task_batching)
        for key in ("params", "outer_params"):
            value = getattr(self, key)
            if isinstance(value, (list, tuple)):
                setattr(self, key, list(value))

    @classmethod
    def params_for_adapt(cls, adapt: str) -> str:
        """The ``params`` a learner spec's ``adapt`` (`metanlp.spec.LearnerSpec`) means for this
        algorithm; the identity unless an algorithm has no use for some set."""
        return adapt

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``from_dict`` reads it back)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetaConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            hints = "".join(did_you_mean(key, known) for key in unknown[:1])
            raise ValueError(
                f"{cls.__name__} has no options {unknown}{hints}; known: {sorted(known)}."
            )
        return cls(**data)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
