"""MAML++ (Antoniou, Edwards, Storkey 2019): MAML with the training tricks that make it stable.

- LSLR: a learned inner rate per adapted tensor and per step, ``extra["inner_lr.<name>"]`` of
  shape ``(inner_steps,)``; evaluation with more steps than ``inner_steps`` reuses the last rate.
- MSL: while ``epoch < msl_epochs`` the outer loss is ``Σ_j w_j L_Q(φ_j)`` over the steps
  j = 1..k, weights from `msl_weights` (uniform at epoch 0, moving toward the last step); from
  ``msl_epochs`` on only ``L_Q(φ_k)``.
- DA: first order while ``epoch < first_order_epochs``, second order after (eager attention is
  chosen up front since second order will come).
The trainer advances ``epoch`` through `MetaAlgorithm.set_epoch`. Per-step batch-norm statistics
of the paper do not apply to layer-norm Transformers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from metanlp.meta.base import MetaAlgorithm, MetaConfig
from metanlp.meta.inner import InnerLoopResult, LRSchedule
from metanlp.meta.registry import register_algorithm


@dataclass
class MAMLPlusPlusConfig(MetaConfig):
    """`MetaConfig` for MAML++.

    Args:
        msl_epochs (`int`, defaults to 10): epochs using the multi-step loss (0 turns MSL off).
        msl_min_weight (`float`, defaults to 0.03): floor of a non-final step's weight, × 1/k.
        first_order_epochs (`int`, defaults to 5): derivative-order annealing, first order
            before this epoch (0: second order from the start). ``first_order=True`` keeps
            first order throughout.
        learn_inner_lr (`bool`, defaults to True): meta-learn the per-step rates (LSLR).
    """

    msl_epochs: int = 10
    msl_min_weight: float = 0.03
    first_order_epochs: int = 5
    learn_inner_lr: bool = True

    allowed_inner_optimizers: ClassVar[tuple[str, ...]] = ("sgd",)

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("msl_epochs", "first_order_epochs"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"MAMLPlusPlusConfig: {key}={value!r} must be an int >= 0.")
        if not 0 <= self.msl_min_weight <= 1:
            raise ValueError(
                f"MAMLPlusPlusConfig: msl_min_weight={self.msl_min_weight!r} must be in [0, 1]."
            )


def msl_weights(steps: int, epoch: int, msl_epochs: int, min_weight: float = 0.03) -> list[float]:
    """Multi-step loss weights for steps 1..k at ``epoch``; they always sum to 1.

    Non-final weights fall linearly from 1/k to ``min_weight/k`` over ``msl_epochs`` epochs; the
    final weight takes what they give up.
    """
    if steps <= 1:
        return [1.0] * steps
    uniform = 1.0 / steps
    decay = uniform / max(msl_epochs, 1)
    floor = min_weight / steps
    other = max(uniform - epoch * decay, floor)
    return [other] * (steps - 1) + [1.0 - (steps - 1) * other]


class MAMLPlusPlus(MetaAlgorithm):
    """MAML with LSLR, MSL and derivative-order annealing (see the module docstring)."""

    name = "mamlpp"
    config_class = MAMLPlusPlusConfig

    def build_extra(self) -> None:
        params = dict(self.model.named_parameters())
        k = max(self.config.inner_steps, 1)
        for name in self.inner_names:
            p = params[name]
            rates = torch.full((k,), float(self.config.inner_lr), dtype=p.dtype, device=p.device)
            self.extra[f"inner_lr.{name}"] = nn.Parameter(
                rates, requires_grad=self.config.learn_inner_lr
            )

    def may_use_second_order(self) -> bool:
        return not self.config.first_order

    def second_order_now(self) -> bool:
        return not self.config.first_order and self.epoch >= self.config.first_order_epochs

    def uses_step_losses(self) -> bool:
        return self.epoch < self.config.msl_epochs and self.config.inner_steps > 1

    def inner_lr_schedule(self, steps: int) -> LRSchedule:
        k = max(self.config.inner_steps, 1)
        return [{n: self.extra[f"inner_lr.{n}"][j] for n in self.inner_names} for j in range(k)]

    def outer_loss(
        self, result: InnerLoopResult, query: Mapping[str, Tensor], n_way: int
    ) -> tuple[Tensor, Tensor]:
        if not result.step_query_losses:
            return super().outer_loss(result, query, n_way)
        weights = msl_weights(
            len(result.step_query_losses),
            self.epoch,
            self.config.msl_epochs,
            self.config.msl_min_weight,
        )
        loss = sum(w * q for w, q in zip(weights, result.step_query_losses, strict=True))
        with torch.no_grad():  # logits only feed the accuracy metric
            logits = self.forward_with(result.fast, query, n_way)
        return loss, logits

    def metrics(
        self,
        loss: Tensor,
        logits: Tensor,
        query: Mapping[str, Tensor],
        result: InnerLoopResult | None,
    ) -> dict[str, float]:
        out = super().metrics(loss, logits, query, result)
        if (
            result is not None and result.step_query_losses
        ):  # report L_Q(φ_k), comparable across epochs
            out["query_loss"] = float(result.step_query_losses[-1].detach())
            out["msl_loss"] = float(loss.detach())
        return out


register_algorithm("mamlpp", MAMLPlusPlusConfig, MAMLPlusPlus)
