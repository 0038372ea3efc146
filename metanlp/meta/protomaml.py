"""Proto-MAML (Triantafillou et al. 2020, Meta-Dataset): MAML from a prototype head.

Each episode the head starts from the support prototypes ``c_n`` (computed with the current
meta-parameters θ): ``W_n = 2 c_n``, ``b_n = −‖c_n‖²``, so the initial logits are
``−‖f(x) − c_n‖²`` up to a per-example constant (ProtoNet's classifier). The head has exactly
``n_way`` rows in the episode's label order, so any N and any label permutation work, and the
model's own head is never meta-learned. Then inner steps run as in MAML over the adapted set
(the head plus ``params``), second or first order. The prototype head is a function of θ
carried in the graph, so the outer gradient flows through the initialisation in both orders
(with first order the inner updates count as identity, as in the paper's fo-Proto-MAML).
For NER (``task="token"``) the prototypes are per tag over support tokens (``O`` included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from metanlp.meta.base import MetaAlgorithm, MetaConfig
from metanlp.meta.efficient import PREFIX_KEY, layered_embed
from metanlp.meta.prototypes import class_prototypes, prototype_head
from metanlp.meta.registry import register_algorithm
from metanlp.models import HEAD_PARAMETER_NAMES, model_inputs


@dataclass
class ProtoMAMLConfig(MetaConfig):
    """`MetaConfig` for Proto-MAML. The head always adapts (it is added to ``params`` if
    missing) and is never meta-learned (its start comes from the prototypes).

    Example:
        ```python
        >>> ProtoMAMLConfig(params="lora", inner_steps=3, inner_lr=1e-2, first_order=True)
        ```
    """

    min_inner_steps: ClassVar[int] = 0


class ProtoMAML(MetaAlgorithm):
    """MAML whose per-episode head initialisation is the support prototypes.

    Example:
        ```python
        >>> algo = ProtoMAML(model, ProtoMAMLConfig(params="top", top_layers=1, inner_steps=2))
        >>> algo.meta_backward(episode)  # gradients reach θ through the prototype head too
        ```
    """

    name = "protomaml"
    config_class = ProtoMAMLConfig

    def select_inner_names(self) -> list[str]:
        names = super().select_inner_names()
        return names + [h for h in HEAD_PARAMETER_NAMES if h not in names]

    def select_outer_names(self) -> list[str]:
        names = [n for n in super().select_outer_names() if n not in HEAD_PARAMETER_NAMES]
        if not names:
            raise ValueError(
                f"Proto-MAML: the meta-learned set ({self.config.outer_params or self.config.params!r}) "
                "is only the head, whose start comes from prototypes; meta-learn encoder tensors "
                "(params or outer_params = 'all', 'top', 'lora', 'adapter' or names)."
            )
        return names

    def initial_fast_weights(
        self, support: Mapping[str, Tensor], n_way: int, *, training: bool
    ) -> dict[str, Tensor]:
        """φ_0: the body tensors as in MAML, the head from the support prototypes at θ."""
        # The body entries must be graph nodes of their own: were they θ itself, the head's
        # dependence on θ would leak into the inner gradient ∂L_S/∂φ_body (autograd.grad gives
        # total derivatives) and the first-order inner loop would free the prototype graph.
        # ``view_as`` makes that node without copying.
        fast = {
            n: (t.view_as(t) if t.requires_grad else t)
            for n, t in super().initial_fast_weights(support, n_way, training=training).items()
            if n not in HEAD_PARAMETER_NAMES
        }
        # φ_0's body equals θ, so the module's own weights give the prototype features; in
        # training they keep the graph to θ, in evaluation nothing is recorded.
        with torch.set_grad_enabled(training and torch.is_grad_enabled()):
            if PREFIX_KEY in support:  # the frozen lower layers already ran (exact, cheaper)
                feats = layered_embed(self.model, {}, support)
            else:
                feats = self.model.embed(**model_inputs(support))
            weight, bias = prototype_head(class_prototypes(feats, support["labels"], n_way))
        fast["head.weight"], fast["head.bias"] = weight, bias
        return fast


register_algorithm("protomaml", ProtoMAMLConfig, ProtoMAML)
