"""Prototypical networks (Snell, Swersky, Zemel 2017): the metric baseline, no inner loop.

``p(y = n | x) ∝ exp(−‖f(x) − c_n‖²)`` with ``c_n`` the mean support embedding of class ``n``;
the encoder (or the chosen subset: ``top``, ``lora``, ``adapter``, ``all``) is trained on the
query cross-entropy, gradients flowing through both the query embeddings and the prototypes.
For NER (``task="token"``) prototypes are per tag over support tokens (ProtoBERT-style): ``O``
is a class like any other and positions labelled ``-100`` are ignored. The model's linear head
is never used. "Adapting" to a support set means computing its prototypes, which are the
whole fast-weight dict (``{"prototypes": (N, H)}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from metanlp.meta.base import MetaAlgorithm, MetaConfig, model_mode, task_loss
from metanlp.meta.probe import has_probe
from metanlp.meta.prototypes import PROTOTYPES_KEY, class_prototypes, squared_euclidean_logits
from metanlp.meta.registry import register_algorithm
from metanlp.models import HEAD_PARAMETER_NAMES, model_inputs


@dataclass
class ProtoNetConfig(MetaConfig):
    """`MetaConfig` for ProtoNet: ``params`` is the trained subset (the head is left out, it is
    unused); there is no inner loop, so ``inner_steps`` must stay 0 and ``first_order`` /
    ``inner_*`` options have no effect.

    Example:
        ```python
        >>> ProtoNetConfig(params="lora")
        ```
    """

    min_inner_steps: ClassVar[int] = 0

    inner_steps: int = 0

    @classmethod
    def params_for_adapt(cls, adapt: str) -> str:
        """ProtoNet has no head, so a spec's ``adapt="head"`` trains the whole encoder."""
        return "all" if adapt == "head" else adapt

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_steps != 0 or self.eval_inner_steps not in (None, 0):
            raise ValueError(
                f"ProtoNetConfig: inner_steps={self.inner_steps!r}, eval_inner_steps="
                f"{self.eval_inner_steps!r}; ProtoNet has no inner loop, leave both at 0/None "
                "(use 'protomaml' for prototypes followed by inner steps)."
            )
        if self.outer_params is not None:
            raise ValueError(
                f"ProtoNetConfig: outer_params={self.outer_params!r} must be None; ProtoNet "
                "trains `params` (there is no separate inner set)."
            )


class ProtoNet(MetaAlgorithm):
    """Prototypical network over a `FewShotModel`'s encoder (pooled or per-token features).

    Example:
        ```python
        >>> algo = ProtoNet(model, ProtoNetConfig(params="all"))
        >>> algo.meta_backward(episode)
        {'query_loss': ..., 'query_acc': ...}
        >>> protos = algo.adapt(episode.support, episode.num_labels)
        >>> algo.predict_logits(protos, episode.query, episode.num_labels).shape
        ```
    """

    name = "protonet"
    config_class = ProtoNetConfig

    def select_inner_names(self) -> list[str]:
        return []

    def select_outer_names(self) -> list[str]:
        chosen = super().select_inner_names()
        names = [n for n in chosen if n not in HEAD_PARAMETER_NAMES]
        if not names:
            raise ValueError(
                f"ProtoNet: params={self.config.params!r} selects only the head, which ProtoNet "
                "never uses; choose encoder tensors ('all', 'top', 'lora', 'adapter' or names)."
            )
        return names

    def may_use_second_order(self) -> bool:
        return False

    def second_order_now(self) -> bool:
        return False

    # ---- the metric classifier ---------------------------------------------------------------
    def features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Encoder features ``(B, H)`` or ``(B, T, H)`` of a batch (graph kept if grad is on)."""
        return self.model.embed(**model_inputs(batch))

    def prototypes(self, support: Mapping[str, Tensor], n_way: int) -> Tensor:
        """``(n_way, H)`` class means of the support features (per token for NER)."""
        return class_prototypes(self.features(support), support["labels"], n_way)

    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        """No inner loop, so ``grad_scale`` (inner-loop loss scaling) has nothing to scale."""
        support, query, n_way = self.unpack(episode)
        with model_mode(self.model, self.config.train_dropout):
            protos = self.prototypes(support, n_way)
            logits = squared_euclidean_logits(self.features(query), protos)
            loss = task_loss(logits, query["labels"])
        params = [p for p in self.meta_parameters() if p.requires_grad]
        if params and loss.requires_grad:
            torch.autograd.backward(loss * scale, inputs=params)
        return self.metrics(loss, logits, query, None)

    @torch.no_grad()
    def adapt(
        self, support: Mapping[str, Tensor], n_way: int, steps: int | None = None
    ) -> dict[str, Tensor]:
        """Prototypes of ``support`` in eval mode, as ``{"prototypes": (n_way, H)}``.

        ``steps`` is accepted for a uniform evaluation API and must be ``None`` or 0.
        """
        if steps not in (None, 0):
            raise ValueError(f"ProtoNet has no inner loop; adapt(steps={steps!r}) needs None or 0.")
        with model_mode(self.model, False):
            return {PROTOTYPES_KEY: self.prototypes(self.to_device(support), n_way)}

    @torch.no_grad()
    def predict_logits(
        self, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
    ) -> Tensor:
        """``−‖f(x) − c_n‖²`` logits ``(B, n_way)`` or ``(B, T, n_way)`` from `adapt`'s output.

        Fast weights without prototypes (test-time fine-tuning turns them into a linear head,
        `metanlp.meta.finetune`; the policy may choose a linear probe, `metanlp.meta.probe`)
        are scored like any other algorithm's.
        """
        if PROTOTYPES_KEY not in fast:
            if HEAD_PARAMETER_NAMES[0] in fast or has_probe(fast):
                return super().predict_logits(fast, batch, n_way)
            raise KeyError(
                f"ProtoNet.predict_logits needs the output of ProtoNet.adapt ({{'{PROTOTYPES_KEY}': ...}}) "
                f"or fine-tuned weights with a head, got keys {sorted(fast)[:4]}."
            )
        protos = fast[PROTOTYPES_KEY]
        if protos.shape[0] < n_way:
            raise ValueError(f"n_way={n_way} but only {protos.shape[0]} prototypes were adapted.")
        with model_mode(self.model, False):
            feats = self.features(self.to_device(batch))
        return squared_euclidean_logits(feats, protos[:n_way])


register_algorithm("protonet", ProtoNetConfig, ProtoNet)
