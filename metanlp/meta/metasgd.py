"""Meta-SGD (Li et al. 2017): a learned inner learning rate for every adapted scalar.

``φ_{j+1} = φ_j − α ⊙ ∇L_S(φ_j)`` with α a tensor of each adapted parameter's shape,
initialised to ``inner_lr`` and meta-learned with θ (stored as ``extra["inner_lr.<name>"]``,
saved by `state_dict`). α is unconstrained, as in the paper. With ``first_order=True`` α still
gets its first-order gradient ``−∇L_S(φ_j) ⊙ ∇L_Q(φ_k)`` summed over steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metanlp.meta.base import MetaAlgorithm, MetaConfig
from metanlp.meta.inner import LRSchedule
from metanlp.meta.registry import register_algorithm


@dataclass
class MetaSGDConfig(MetaConfig):
    """`MetaConfig` for Meta-SGD; ``inner_lr`` is α's initial value; SGD inner steps only."""

    allowed_inner_optimizers: ClassVar[tuple[str, ...]] = ("sgd",)


class MetaSGD(MetaAlgorithm):
    """MAML with per-parameter (elementwise) learned inner learning rates."""

    name = "metasgd"
    config_class = MetaSGDConfig

    def build_extra(self) -> None:
        params = dict(self.model.named_parameters())
        for name in self.inner_names:
            p = params[name]
            self.extra[f"inner_lr.{name}"] = nn.Parameter(
                torch.full_like(p, self.config.inner_lr, requires_grad=True)
            )

    def inner_lr_schedule(self, steps: int) -> LRSchedule:
        return {name: self.extra[f"inner_lr.{name}"] for name in self.inner_names}


register_algorithm("metasgd", MetaSGDConfig, MetaSGD)
