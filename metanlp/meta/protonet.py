"""Prototypical networks (Snell, Swersky, Zemel 2017): the metric baseline, no inner loop.

``p(y = n | x) ∝ exp(−‖f(x) − c_n‖²)`` with ``c_n`` the mean support embedding of class ``n``;
the encoder (or the chosen subset: ``top``, ``lora``, ``adapter``, ``all``) is trained on the
query cross-entropy, gradients flowing through both the query embeddings and the prototypes.
For NER (``task="token"``) prototypes are per tag over support tokens (ProtoBERT-style): ``O``
is a class like any other and positions labelled ``-100`` are ignored. The model's linear head
is never used. "Adapting" to a support set means computing its prototypes, which are the
whole fast-weight dict (``{"prototypes": (N, H)}``).

With ``names=True`` (`metanlp.names`) a class is also described by its name: the support batch
carries the encoded names, class ``n``'s prototype is
``normalise(mean_k normalise(f(x_k)) + w(K_n) * normalise(f(name_n)))`` and the logits are
``scale * cos(f(x), c_n)``. The shot-dependent weight ``w`` (the extra ``names.weight``, one
entry per shot count) and the scale (``names.log_scale``) are meta-learned with the encoder;
each meta-training episode keeps a random number of its support examples per class (0 to K),
so every entry of ``w`` up to K meets tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metanlp.meta.base import MetaAlgorithm, MetaConfig, model_mode, task_loss
from metanlp.meta.probe import has_probe
from metanlp.meta.prototypes import PROTOTYPES_KEY, class_prototypes, squared_euclidean_logits
from metanlp.meta.registry import register_algorithm
from metanlp.models import HEAD_PARAMETER_NAMES, model_inputs
from metanlp.names import (
    DEFAULT_TEMPLATE,
    DEFAULT_WEIGHT,
    MAX_SHOTS,
    NAME_TRUST,
    cosine_logits,
    encode_label_names,
    inverse_softplus,
    name_batch,
    name_prototypes,
    resolve_label_names,
    shot_weights,
)

NAME_WEIGHT = "names.weight"
NAME_LOG_SCALE = "names.log_scale"


@dataclass
class ProtoNetConfig(MetaConfig):
    """`MetaConfig` for ProtoNet: ``params`` is the trained subset (the head is left out, it is
    unused); there is no inner loop, so ``inner_steps`` must stay 0 and ``first_order`` /
    ``inner_*`` options have no effect.

    Example:
        ```python
        >>> ProtoNetConfig(params="lora")
        >>> ProtoNetConfig(names=True)     # prototypes mixed with the classes' names
        ```

    Args (besides `MetaConfig`'s):
        names (`bool`, defaults to `False`): Read the classes' names (`metanlp.names`); the
            metric becomes a scaled cosine.
        name_template (`str`, defaults to `metanlp.names.DEFAULT_TEMPLATE`): How a name is
            put into words before it is encoded.
        name_weight (`float`, defaults to `metanlp.names.DEFAULT_WEIGHT`): The initial w(K) of
            every shot count (before meta-training).
        name_scale (`float`, defaults to 10.0): The initial cosine scale.
        name_shot_sampling (`bool`, defaults to `True`): In meta-training, keep a random
            0..K support examples per class in each episode (so w(K) learns for every K).
        name_lr_gain (`float`, defaults to 1000.0): The weight table and log-scale are stored
            divided by this gain. The outer AdamW moves every tensor by about its learning
            rate per step, which at an encoder's rate (3e-5) would leave them where they
            started; stored this way, a step moves them ``gain`` times further.
    """

    min_inner_steps: ClassVar[int] = 0

    inner_steps: int = 0
    names: bool = False
    name_template: str = DEFAULT_TEMPLATE
    name_weight: float = DEFAULT_WEIGHT
    name_scale: float = 10.0
    name_shot_sampling: bool = True
    name_lr_gain: float = 1000.0

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
        if not isinstance(self.name_template, str) or self.name_template.count("{}") != 1:
            raise ValueError(
                f"ProtoNetConfig: name_template={self.name_template!r} needs exactly one '{{}}' "
                "where the name goes, e.g. 'this text is about {}'."
            )
        for key in ("name_weight", "name_scale", "name_lr_gain"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"ProtoNetConfig: {key}={value!r} must be a number > 0.")


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

    def build_extra(self) -> None:
        if self.config.names and self.model.task != "sequence":
            raise ValueError(
                "ProtoNetConfig(names=True) is for text classification (task='sequence'); "
                "NER learners type spans by name with DecomposedConfig(typing='names')."
            )
        if self.config.names:
            gain = float(self.config.name_lr_gain)
            start = inverse_softplus(float(self.config.name_weight)) / gain
            self.extra[NAME_WEIGHT] = nn.Parameter(torch.full((MAX_SHOTS + 1,), start))
            self.extra[NAME_LOG_SCALE] = nn.Parameter(
                torch.tensor(math.log(self.config.name_scale) / gain)
            )

    @property
    def uses_label_names(self) -> bool:
        """Whether `adapt` reads the classes' names from the support batch (`metanlp.names`)."""
        return bool(self.config.names)

    def name_weights(self, counts: Tensor) -> Tensor:
        """The learned w(K_n) of classes with ``counts`` support examples, ``(N,)``."""
        return shot_weights(self.extra[NAME_WEIGHT] * self.config.name_lr_gain, counts)

    def name_scale(self) -> Tensor:
        """The learned cosine scale."""
        return (self.extra[NAME_LOG_SCALE] * self.config.name_lr_gain).exp()

    def may_use_second_order(self) -> bool:
        return False

    def second_order_now(self) -> bool:
        return False

    # ---- the metric classifier ---------------------------------------------------------------
    def features(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Encoder features ``(B, H)`` or ``(B, T, H)`` of a batch (graph kept if grad is on)."""
        return self.model.embed(**model_inputs(batch))

    def prototypes(self, support: Mapping[str, Tensor], n_way: int) -> Tensor:
        """``(n_way, H)`` class means of the support features (per token for NER); with
        ``names=True`` the unit prototypes mixed with the names the support batch carries
        (`metanlp.names.with_label_names`; without them, ``w = 0``)."""
        if not self.config.names:
            return class_prototypes(self.features(support), support["labels"], n_way)
        labels = support["labels"]
        counts = torch.bincount(labels, minlength=n_way)[:n_way]
        names = name_batch(support)
        if names is None:  # the same learner without names: w = 0
            if bool((counts == 0).any()):
                raise ValueError(
                    f"ProtoNet: class(es) {(counts == 0).nonzero().flatten().tolist()} have no "
                    "support example and no name; give examples or label_names."
                )
            feats = self.features(support)
            return name_prototypes(
                feats, labels, feats.new_zeros(n_way, feats.shape[-1]), n_way, 0.0
            )
        name_feats = self.features(names)
        feats = self.features(support) if labels.numel() else name_feats[:0]
        weights = self.name_weights(counts)
        if NAME_TRUST in support:
            weights = weights * support[NAME_TRUST].to(weights)
        return name_prototypes(feats, labels, name_feats, n_way, weights)

    def logits(self, features: Tensor, protos: Tensor) -> Tensor:
        """Squared-Euclidean logits, or with ``names=True`` the learned-scale cosine."""
        if self.config.names:
            return cosine_logits(features, protos, self.name_scale())
        return squared_euclidean_logits(features, protos)

    def episode_support(self, episode: Any, support: dict[str, Tensor]) -> dict[str, Tensor]:
        """With ``names=True``: the episode's class names encoded into ``support``, and (with
        ``name_shot_sampling``) only a random 0..K of its examples per class kept."""
        if not self.config.names:
            return support
        label_names = getattr(episode, "label_names", None)
        if not label_names:
            raise ValueError(
                "ProtoNet(names=True) needs episodes with label_names (metanlp.episodes.Episode)."
            )
        tokenizer = getattr(self.model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("ProtoNet(names=True) needs model.tokenizer to encode class names.")
        choice = resolve_label_names(label_names, None)  # meaningless names: none (w = 0)
        encoded = {}
        if choice.used:
            encoded = encode_label_names(tokenizer, choice.names, self.config.name_template)
        if self.config.name_shot_sampling:
            labels = support["labels"]
            k = int(torch.bincount(labels).min())
            keep_k = int(torch.randint(0 if choice.used else 1, k + 1, ()))
            rank = torch.zeros_like(labels)
            for c in labels.unique():
                rows = (labels == c).nonzero().flatten()
                rank[rows] = torch.arange(len(rows), device=labels.device)
            rows = (rank < keep_k).nonzero().flatten()
            support = {
                k_: v.index_select(0, rows) if torch.is_tensor(v) and v.dim() else v
                for k_, v in support.items()
            }
        return {**support, **{k_: v.to(self.device) for k_, v in encoded.items()}}

    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        """No inner loop, so ``grad_scale`` (inner-loop loss scaling) has nothing to scale."""
        support, query, n_way = self.unpack(episode)
        support = self.episode_support(episode, support)
        with model_mode(self.model, self.config.train_dropout):
            protos = self.prototypes(support, n_way)
            logits = self.logits(self.features(query), protos)
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
        return self.logits(feats, protos[:n_way])


register_algorithm("protonet", ProtoNetConfig, ProtoNet)
