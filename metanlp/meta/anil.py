"""ANIL (Raghu et al. 2020): almost no inner loop — adapt only the head, meta-learn everything chosen.

The inner set is always the head; ``params`` / ``outer_params`` choose what the outer loop
updates (head + body subset). Because the body is fixed during adaptation, the support and
query features are computed once per episode and the inner steps run on the head alone: second
order (the default) is then cheap, and its meta-gradient still reaches the body through the
features. With ``train_dropout`` the features use one dropout mask for all inner steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metanlp.meta.base import MetaAlgorithm, MetaConfig, model_mode, task_loss
from metanlp.meta.inner import InnerLoopResult
from metanlp.meta.params import select_parameters
from metanlp.meta.registry import register_algorithm
from metanlp.models import HEAD_PARAMETER_NAMES, model_inputs


@dataclass
class ANILConfig(MetaConfig):
    """`MetaConfig` for ANIL: ``params`` is the *outer* set (the inner set is the head)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.outer_params is not None:
            raise ValueError(
                f"ANILConfig: outer_params={self.outer_params!r} must be None; ANIL adapts the "
                "head only and meta-learns `params` (e.g. params='lora')."
            )


def _head_logits(fast: Mapping[str, Tensor], features: Tensor, n_way: int) -> Tensor:
    return F.linear(features, fast["head.weight"], fast["head.bias"])[..., :n_way]


class ANIL(MetaAlgorithm):
    """Head-only inner loop on features computed once per episode; outer loop on ``params``."""

    name = "anil"
    config_class = ANILConfig

    def select_inner_names(self) -> list[str]:
        return list(HEAD_PARAMETER_NAMES)

    def select_outer_names(self) -> list[str]:
        names = select_parameters(self.model, self.config.params, top_layers=self.config.top_layers)
        if self.model.head_init == "zero":
            names = [n for n in names if n not in HEAD_PARAMETER_NAMES]
        return names

    def _features(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.model.embed(**model_inputs(batch))

    def _inner(
        self,
        fast: dict[str, Tensor],
        feats: Tensor,
        labels: Tensor,
        n_way: int,
        steps: int,
        mode: str,
        grad_scale: float | None = None,
    ) -> InnerLoopResult:
        return self.inner(
            lambda f: task_loss(_head_logits(f, feats, n_way), labels),
            fast, steps=steps, mode=mode, grad_scale=grad_scale,
        )  # fmt: skip

    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        support, query, n_way = self.unpack(episode)
        mode = "second_order" if self.second_order_now() else "first_order"
        with model_mode(self.model, self.config.train_dropout):
            feats_s, feats_q = self._features(support), self._features(query)
            if mode == "first_order":  # the body then gets only the query gradient
                feats_s = feats_s.detach()
            fast = self.initial_fast_weights(support, n_way, training=True)
            result = self._inner(
                fast, feats_s, support["labels"], n_way, self.config.inner_steps, mode, grad_scale
            )
            logits = _head_logits(result.fast, feats_q, n_way)
            loss = task_loss(logits, query["labels"])
        params = [p for p in self.meta_parameters() if p.requires_grad]
        if params and loss.requires_grad:
            torch.autograd.backward(loss * scale, inputs=params)
        return self.metrics(loss, logits, query, result)

    def adapt(
        self, support: Mapping[str, Tensor], n_way: int, steps: int | None = None
    ) -> dict[str, Tensor]:
        steps = self.eval_steps(steps)
        support = self.to_device(support)
        with model_mode(self.model, False), torch.no_grad():
            feats = self._features(support)
        fast = self.task_head(
            {n: t.detach() for n, t in self.initial_fast_weights(support, n_way, training=False).items()},
            n_way,
        )  # fmt: skip
        return self._inner(fast, feats, support["labels"], n_way, steps, "no_graph").fast


register_algorithm("anil", ANILConfig, ANIL)
