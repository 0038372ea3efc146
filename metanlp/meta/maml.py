"""MAML (Finn et al. 2017), second order, and its first-order variant FOMAML.

All the machinery is the `MetaAlgorithm` default: φ_0 = θ (no copy), k steps of
``φ ← φ − α ∇L_S(φ)`` through `inner_loop`, query loss at φ_k, backward to θ. Second order
keeps the graph of every inner step (``create_graph=True``) and switches SDPA attention to eager
up front; first order detaches the inner gradients, so the meta-gradient is ∇_φ L_Q(φ_k).
"""

from __future__ import annotations

from dataclasses import dataclass

from metanlp.meta.base import MetaAlgorithm, MetaConfig
from metanlp.meta.registry import register_algorithm


@dataclass
class MAMLConfig(MetaConfig):
    """`MetaConfig` for MAML; ``first_order=True`` gives FOMAML."""


@dataclass
class FOMAMLConfig(MAMLConfig):
    """`MAMLConfig` with ``first_order=True`` by default (registered as ``"fomaml"``)."""

    first_order: bool = True


class MAML(MetaAlgorithm):
    """Model-agnostic meta-learning over any parameter subset of a `FewShotModel`.

    Example:
        ```python
        >>> algo = MAML(model, MAMLConfig(params="lora", inner_steps=3, inner_lr=1e-2))
        >>> algo.meta_backward(episode)  # adds the meta-gradient to .grad
        {'query_loss': ..., 'query_acc': ..., 'support_loss': ..., 'inner_skipped': 0.0}
        ```
    """

    name = "maml"
    config_class = MAMLConfig


class FOMAML(MAML):
    """First-order MAML: the meta-gradient is the query gradient at the adapted weights."""

    name = "fomaml"
    config_class = MAMLConfig


register_algorithm("maml", MAMLConfig, MAML)
register_algorithm("fomaml", FOMAMLConfig, FOMAML)
