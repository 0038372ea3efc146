"""Reptile (Nichol, Achiam, Schulman 2018): move θ toward the task-adapted weights.

Per task: k steps of SGD (or momentum / Adam) on the support set from φ to φ̃, with no graph
kept. `meta_backward` then adds ``scale · (φ − φ̃)`` to ``φ.grad``: with the trainer's
``scale = 1/B`` over a meta-batch of B tasks and a plain SGD outer step of rate ε, the update is
``φ ← φ − ε · mean(φ − φ̃) = φ + ε · mean(φ̃ − φ)``, Reptile's definition. (Adam or clipping in
the outer optimiser treat this "pseudo-gradient" like any gradient, as in the paper's code.)
The query set is not used for the update; its loss and accuracy at φ̃ are reported as metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metanlp.meta.base import MetaAlgorithm, MetaConfig, model_mode, task_loss
from metanlp.meta.registry import register_algorithm


@dataclass
class ReptileConfig(MetaConfig):
    """`MetaConfig` for Reptile: always first order; ``outer_params`` must stay unset (the
    update is a displacement, defined only for adapted tensors)."""

    first_order: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.first_order:
            raise ValueError(
                "ReptileConfig: first_order=False is meaningless; Reptile has no second derivatives."
            )
        if self.outer_params is not None:
            raise ValueError(
                f"ReptileConfig: outer_params={self.outer_params!r} must be None; Reptile updates "
                "exactly the adapted tensors (choose them with params)."
            )


class Reptile(MetaAlgorithm):
    """Reptile over any parameter subset (see the module docstring for the gradient convention)."""

    name = "reptile"
    config_class = ReptileConfig

    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        support, query, n_way = self.unpack(episode)
        with model_mode(self.model, self.config.train_dropout):
            fast = self.initial_fast_weights(support, n_way, training=False)
            result = self.run_inner(
                fast, support, n_way, steps=self.config.inner_steps, mode="no_graph",
                grad_scale=grad_scale,
            )  # fmt: skip
            with torch.no_grad():
                logits = self.forward_with(result.fast, query, n_way)
                loss = task_loss(logits, query["labels"])
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name in self.outer_names:
                p = params[name]
                step = (p - result.fast[name]) * scale
                p.grad = step if p.grad is None else p.grad + step
        return self.metrics(loss, logits, query, result)


register_algorithm("reptile", ReptileConfig, Reptile)
