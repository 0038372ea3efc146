"""Test-time fine-tuning after adaptation ("P>M>F": pre-train, meta-train, fine-tune; Hu et al.
2022, *Pushing the Limits of Simple Pipelines for Few-Shot Learning*).

A meta-learned inner loop adapts a few tensors for a few SGD steps. On a task far from the
meta-training tasks (news topics after meta-training on tweets) that can be too little, and plain
fine-tuning of the whole pretrained model wins. Fine-tuning *from the adapted state* keeps what
meta-training gives (the meta-learned encoder after its inner loop and, if asked, the adapted
head, for Proto-MAML / ProtoNet a classifier built from the prototypes) and adds what
fine-tuning gives (every weight moves):

1. φ_k = the algorithm's own adaptation (its inner loop; ProtoNet's prototypes become the linear
   head ``W_n = 2 c_n, b_n = −‖c_n‖²``, the same softmax as its distance classifier);
2. starting there, ``steps`` full-batch AdamW steps on the support cross-entropy over ``params``
   (default every parameter) plus the head, with dropout off, so the result is deterministic.
   The head restarts from zeros by default (``head_start="zero"``, see `FineTuneConfig` for the
   measurements); ``head_start="adapted"`` keeps the adapted one.

The learner's own weights are never modified; the returned dict holds copies of every tuned tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from metanlp.meta.efficient import (
    PREFIX_KEY,
    PREFIX_LAYER_KEY,
    cache_frozen_prefix,
    frozen_prefix_layer,
    without_prefix_above,
)
from metanlp.meta.helpers import coerce_setting, model_mode, task_loss
from metanlp.meta.params import PARAMETER_SETS, select_parameters
from metanlp.meta.prototypes import PROTOTYPES_KEY, prototype_head
from metanlp.models import HEAD_PARAMETER_NAMES, task_rows

HEAD_STARTS = ("zero", "adapted")


@dataclass(frozen=True)
class FineTuneConfig:
    """How to fine-tune after the learned adaptation.

    Args:
        steps (`int`, defaults to 10): Full-batch AdamW steps on the support set.
        lr (`float`, defaults to 5e-5): Learning rate of the encoder tensors.
        head_lr (`float`, defaults to 5e-3): Learning rate of the head.
        params (`str`, defaults to ``"all"``): Tensors that move besides the head, one of
            `PARAMETER_SETS` (``"all"``, ``"body"``, ``"top"``, ``"head"``, ``"lora"``, ``"adapter"``).
        top_layers (`int`, defaults to 2): Layers for ``params="top"``.
        weight_decay (`float`, defaults to 0.0): AdamW's decoupled weight decay.
        head_start (`str`, defaults to ``"zero"``): ``"zero"`` starts the head from zeros (every
            class equally likely, as plain fine-tuning does) on the adapted encoder;
            ``"adapted"`` keeps the head adaptation gave (for Proto-MAML / ProtoNet the
            prototype classifier). Measured on BBC 5-way 5-shot with a learner meta-trained on
            tweets, the adapted head already fits the support set (loss about 0.1), so
            fine-tuning moves the encoder less: 88.5 % against 90.5 % from a zero head (8
            episodes); on WNUT-16 NER the prototype head's ``O`` row wins every token and
            fine-tuning from it keeps tagging ``O``.

    Example:
        ```python
        >>> FineTuneConfig(steps=10, params="top", top_layers=2)
        ```
    """

    steps: int = 10
    lr: float = 5e-5
    head_lr: float = 5e-3
    params: str = "all"
    top_layers: int = 2
    weight_decay: float = 0.0
    head_start: str = "zero"

    def __post_init__(self) -> None:
        if self.head_start not in HEAD_STARTS:
            raise ValueError(
                f"FineTuneConfig.head_start={self.head_start!r} is not allowed; choose one of {list(HEAD_STARTS)}."
            )
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"FineTuneConfig.steps={self.steps!r} must be an int >= 1.")
        for key in ("lr", "head_lr", "weight_decay"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(
                    f"FineTuneConfig.{key}={value!r} must be a number >= 0 and finite."
                )
        if self.params not in PARAMETER_SETS:
            raise ValueError(
                f"FineTuneConfig.params={self.params!r} is not allowed; choose one of {list(PARAMETER_SETS)}."
            )
        if isinstance(self.top_layers, bool) or not isinstance(self.top_layers, int):
            raise ValueError(f"FineTuneConfig.top_layers={self.top_layers!r} must be an int >= 1.")

    @classmethod
    def coerce(cls, value: Any) -> FineTuneConfig | None:
        """``None`` / ``False`` -> no fine-tuning; ``True`` -> defaults; an int -> that many
        steps; a mapping -> its fields; a `FineTuneConfig` as is."""
        return coerce_setting(cls, value, "finetune", from_int=lambda steps: cls(steps=steps))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finetune_fast_weights(
    algorithm: Any,
    support: Mapping[str, Tensor],
    n_way: int,
    config: FineTuneConfig,
    start: Mapping[str, Tensor],
    on_step: Callable[[int, Mapping[str, Tensor]], None] | None = None,
    *,
    loss_fn: Callable[[Mapping[str, Tensor], Mapping[str, Tensor]], Tensor] | None = None,
    head_names: Sequence[str] = HEAD_PARAMETER_NAMES,
) -> dict[str, Tensor]:
    """Fine-tune from ``start`` (the output of ``algorithm.adapt``) on ``support``.

    Args:
        algorithm (`MetaAlgorithm`): Gives the model and its functional forward.
        support (`dict`): Encoded support batch with ``labels``.
        n_way (`int`): Classes (NER: tags, ``O`` included).
        config (`FineTuneConfig`): Steps, rates and which tensors move.
        start (`dict`): The adapted fast weights φ_k; ProtoNet's ``{"prototypes": ...}`` too.
        on_step (`Callable`, *optional*): Called as ``on_step(step, weights)`` after every step
            (``step`` counts from 1), e.g. to score a trajectory (`metanlp.meta.policy`).
        loss_fn (`Callable`, *optional*): ``loss_fn(weights, support)``, the support loss to
            minimise (``support`` may carry the frozen-prefix cache, see
            `metanlp.meta.efficient.layered_hidden`); defaults to the cross-entropy of
            ``algorithm.forward_with`` on ``support["labels"]``. The decomposed learner's span
            typer passes its span-typing loss.
        head_names (`Sequence[str]`, defaults to `HEAD_PARAMETER_NAMES`): The head's tensors
            (rate ``config.head_lr``, zeroed by ``head_start="zero"``); names that are not the
            model's must be in ``start``. The model's own head is left out when other names
            are given.

    Returns:
        A fast-weight dict over ``params`` + head (+ any adapted tensor), for ``predict_logits``.
    """
    model = algorithm.model
    start = dict(start)
    if PROTOTYPES_KEY in start:
        start["head.weight"], start["head.bias"] = prototype_head(start.pop(PROTOTYPES_KEY)[:n_way])
    own = dict(model.named_parameters())
    head_names = tuple(head_names)
    names = select_parameters(model, config.params, top_layers=config.top_layers)
    if head_names != HEAD_PARAMETER_NAMES:
        names = [n for n in names if n not in HEAD_PARAMETER_NAMES]
    names = list(dict.fromkeys([*names, *start, *head_names]))
    missing = [n for n in names if n not in start and n not in own]
    if missing:
        raise ValueError(
            f"finetune_fast_weights: {missing} are neither in `start` nor the model's."
        )
    # The model's head has max_ways rows; the task's has n_way (`task_rows`; no ceiling).
    weights = {
        n: (task_rows(t, n_way) if n in HEAD_PARAMETER_NAMES else t).detach().clone()
        for n in names
        for t in [start[n] if n in start else own[n]]
    }
    weights = {n: w.requires_grad_(True) for n, w in weights.items()}
    in_model = [n for n in weights if n in own]
    support = with_frozen_prefix(algorithm, algorithm.to_device(support), in_model)
    if loss_fn is None:

        def loss_fn(w: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
            return task_loss(algorithm.forward_with(w, batch, n_way), batch["labels"])

    if config.head_start == "zero":
        with torch.no_grad():
            for n in head_names:
                weights[n].zero_()
    head = [weights[n] for n in head_names]
    body = [w for n, w in weights.items() if n not in head_names]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
        fused=fused_adamw(weights.values()),
    )
    with model_mode(model, False), torch.enable_grad():
        for step in range(1, config.steps + 1):
            loss = loss_fn(weights, support)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, weights)
    return {n: w.detach() for n, w in weights.items()}


def fused_adamw(tensors: Iterable[Tensor]) -> bool | None:
    """``True`` when AdamW's fused kernel applies (floating tensors on CPU or CUDA), else ``None``.

    The fused kernel runs the same update as the per-tensor loop in one pass over the tensors;
    on CPU the loop's optimiser step cost as much as a forward pass of a short batch.
    """
    tensors = list(tensors)
    ok = all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)
    return True if tensors and ok else None


def with_frozen_prefix(
    algorithm: Any, batch: Mapping[str, Tensor], trainable: list[str]
) -> Mapping[str, Tensor]:
    """``batch`` with the hidden states below the lowest ``trainable`` layer computed once.

    Fine-tuning the top layers then runs only those layers at each step (exact: the frozen
    layers' output does not change). A batch whose cached prefix ends at or below that layer
    is returned as it is; tensors that reach down to the embeddings drop a cached prefix.
    """
    first = frozen_prefix_layer(algorithm.model, trainable)
    cached = int(batch[PREFIX_LAYER_KEY]) if PREFIX_KEY in batch else None
    if cached is not None and cached <= first:
        return batch
    if first == 0:
        return without_prefix_above(batch, 0)
    with model_mode(algorithm.model, False):
        return cache_frozen_prefix(algorithm.model, batch, first)
