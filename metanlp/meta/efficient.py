"""Efficiency options of the inner-loop engine: checkpointing, a frozen-prefix cache, task batching.

Three options of `MetaConfig`, each exact (the same meta-gradient as the plain path, tested in
float64) and each switched on per algorithm config:

- ``checkpointing="layers"``: every encoder layer runs under non-reentrant
  ``torch.utils.checkpoint`` *with its current fast weights passed in*, so that the recompute in
  backward sees φ_j, not θ. (Transformers' own ``gradient_checkpointing_enable`` recomputes with
  whatever the module holds at backward time, i.e. θ after ``functional_call`` has returned, and
  silently gives a wrong meta-gradient.) Saves activations of first-order and query passes;
  second order keeps them anyway inside the double-backward graph.
- ``checkpointing="steps"``: every second-order inner step (forward, ``create_graph`` backward,
  update) is one checkpointed region; memory stays that of one step whatever k, for about 2x
  the time (non-reentrant checkpoint recomputes the step once in forward, once in backward).
- ``frozen_prefix_cache``: when nothing below encoder layer L is adapted or meta-learned, the
  embeddings and layers ``< L`` run once per episode under ``no_grad`` and the inner loop runs
  only layers ``>= L`` + head. ``"auto"`` uses it when no dropout is active in the prefix (then
  it is exact); ``"on"`` also with dropout (one dropout draw of the prefix per episode and set).
- ``task_batching="vmap"``: `vmap_meta_backward` runs the tasks of a meta-batch in one
  ``torch.func.vmap`` pass with per-task fast weights (see `metanlp.meta.efficient_vmap`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint
from transformers.masking_utils import create_bidirectional_mask

from metanlp.meta.inner import InnerLoopResult, LRSchedule, _lr_for, inner_loop
from metanlp.models import HEAD_PARAMETER_NAMES, FewShotModel, in_length_chunks, mean_pool

CHECKPOINTING = ("none", "layers", "steps")
PREFIX_CACHE = ("auto", "on", "off")
TASK_BATCHING = ("loop", "vmap")
PREFIX_KEY = "frozen_prefix_hidden"
"""Batch key under which `cache_frozen_prefix` stores the hidden states entering layer L."""
PREFIX_LAYER_KEY = "frozen_prefix_layer"
EXT_MASK_KEY = "extended_attention_mask"
"""Batch key of a prepared 4-D attention bias (`extended_mask`), needed under ``vmap``."""
_PER_TOKEN_KEYS = ("input_ids", "token_type_ids", PREFIX_KEY)
"""Batch tensors with a column per token besides the attention mask (cut by length chunks)."""


def check_options(checkpointing: str, frozen_prefix_cache: str, task_batching: str) -> None:
    """Raise a `ValueError` naming the bad value and the accepted ones."""
    for key, value, allowed in (
        ("checkpointing", checkpointing, CHECKPOINTING),
        ("frozen_prefix_cache", frozen_prefix_cache, PREFIX_CACHE),
        ("task_batching", task_batching, TASK_BATCHING),
    ):
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not supported; use one of {allowed}.")


LAYERED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
"""Encoders whose blocks run one by one here (embeddings(input_ids, token_type_ids), then
layer(hidden, attention_bias)): what the frozen-prefix cache and vmap need. Elsewhere the
cache is skipped (``frozen_prefix_layer`` is 0; results are the same, only slower)."""


def runs_layered(model: FewShotModel) -> bool:
    """Whether the encoder's blocks can be run one by one (`LAYERED_MODEL_TYPES`)."""
    return getattr(model.base_encoder.config, "model_type", None) in LAYERED_MODEL_TYPES


def encoder_layers(model: FewShotModel) -> nn.ModuleList:
    """The transformer layers of a BERT-family `FewShotModel`, for running them one by one."""
    if not runs_layered(model):
        raise ValueError(
            f"{type(model.base_encoder).__name__} is not a BERT-family encoder "
            f"({', '.join(LAYERED_MODEL_TYPES)}); the frozen-prefix cache and "
            "task_batching='vmap' run BERT-family blocks one by one. Use "
            "frozen_prefix_cache='off' and task_batching='loop'."
        )
    return model.layers


# ---- activation checkpointing per layer ------------------------------------------------------


def _resolve(module: nn.Module, name: str) -> Tensor:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    return getattr(module, leaf)


@contextlib.contextmanager
def checkpointed_layers(model: FewShotModel) -> Iterator[None]:
    """Run every encoder layer under non-reentrant checkpointing, fast-weight aware.

    Inside ``functional_call`` a layer's attributes are the fast weights; they are read at forward
    time and handed to the checkpointed function as inputs, so the backward recompute (which
    happens after ``functional_call`` restored θ) uses exactly the tensors of the forward.

    Example:
        ```python
        >>> with checkpointed_layers(model):
        ...     loss = task_loss(functional_call(model, fast, (), batch, strict=False), labels)
        ```
    """
    layers = model.layers  # any encoder's blocks: each is wrapped, not re-implemented
    for layer in layers:
        if "forward" in layer.__dict__:
            raise RuntimeError("checkpointed_layers is already active on this model (nested use).")
    try:
        for layer in layers:
            layer.forward = _checkpointed_forward(layer)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _checkpointed_forward(layer: nn.Module) -> Callable[..., Tensor]:
    names = [n for n, _ in layer.named_parameters()]
    plain = type(layer).forward.__get__(layer)
    recomputing = [False]

    def forward(hidden: Tensor, *args: object, **kwargs: object) -> Tensor:
        if recomputing[0] or not torch.is_grad_enabled():
            return plain(hidden, *args, **kwargs)
        tensors = [_resolve(layer, n) for n in names]

        def run(h: Tensor, *ts: Tensor) -> Tensor:
            recomputing[0] = True  # functional_call re-enters `layer.forward`: go straight through
            try:
                return functional_call(layer, dict(zip(names, ts, strict=True)), (h, *args), kwargs)
            finally:
                recomputing[0] = False

        return checkpoint(run, hidden, *tensors, use_reentrant=False)

    return forward


# ---- activation checkpointing per inner step ---------------------------------------------------


def checkpointed_inner_loop(
    support_loss_fn: Callable[[dict[str, Tensor]], Tensor],
    fast: Mapping[str, Tensor],
    *,
    steps: int,
    lr: LRSchedule,
    mode: str = "second_order",
    **kwargs: object,
) -> InnerLoopResult:
    """`inner_loop` (SGD) with each second-order step recomputed in backward instead of stored.

    Other modes keep no per-step graph, so they go to `inner_loop` unchanged. Non-reentrant
    checkpointing tracks every tensor the step reads (learned rates, meta-learned frozen
    weights), so the meta-gradient is the plain one exactly.
    """
    optimizer = kwargs.get("optimizer")
    if mode != "second_order" or steps == 0:
        return inner_loop(support_loss_fn, fast, steps=steps, lr=lr, mode=mode, **kwargs)
    if optimizer is not None and optimizer.kind != "sgd":
        raise ValueError(
            f"checkpointing='steps' supports the 'sgd' inner optimizer, got {optimizer.kind!r}: "
            "momentum/Adam state would be re-updated by the recompute. Use checkpointing='layers'."
        )
    if kwargs.get("grad_scale") is not None or kwargs.get("step_loss_fn") is not None:
        raise ValueError(
            "checkpointing='steps' does not combine with grad_scale or multi-step query losses "
            "(MAML++ MSL); use checkpointing='layers' or 'none'."
        )
    names = list(fast)
    current = {
        n: t if t.requires_grad else t.detach().requires_grad_(True) for n, t in fast.items()
    }
    result = InnerLoopResult(fast=current)

    def one_step(cur: dict[str, Tensor], step: int) -> tuple[dict[str, Tensor], Tensor]:
        with torch.enable_grad():
            loss = support_loss_fn(cur)
            grads = torch.autograd.grad(loss, [cur[n] for n in names], create_graph=True)
        new = {
            n: cur[n] - _lr_for(lr, step, n, False) * g for n, g in zip(names, grads, strict=True)
        }
        return new, loss.detach()

    for step in range(steps):
        current, loss = checkpoint(one_step, current, step, use_reentrant=False)
        result.support_losses.append(float(loss))
    result.fast = current
    return result


# ---- frozen prefix computed once per episode ----------------------------------------------------


def frozen_prefix_layer(model: FewShotModel, trainable: list[str]) -> int:
    """Lowest encoder layer any trainable (adapted or meta-learned) tensor lives in; 0 if none fits.

    0 means there is no frozen prefix to cache (a trainable tensor in the embeddings or in
    layer 0, or outside the layers and the head), or an encoder outside `LAYERED_MODEL_TYPES`.
    """
    if not runs_layered(model):
        return 0
    lowest = model.num_layers
    for name in trainable:
        if name in HEAD_PARAMETER_NAMES:
            continue
        index = model.layer_of(name)
        if index is None:
            return 0
        lowest = min(lowest, index)
    return lowest


def _prefix_modules(model: FewShotModel, first: int) -> list[nn.Module]:
    return [model.base_encoder.embeddings, *encoder_layers(model)[:first]]


def prefix_dropout_active(model: FewShotModel, first: int) -> bool:
    """Whether a dropout module with ``p > 0`` is in training mode below layer ``first``."""
    return any(
        isinstance(m, nn.Dropout) and m.p > 0 and m.training
        for root in _prefix_modules(model, first)
        for m in root.modules()
    )


def _mask(
    model: FewShotModel, hidden: Tensor, attention_mask: Tensor, materialize: bool = False
) -> Tensor | None:
    return create_bidirectional_mask(
        config=model.base_encoder.config,
        inputs_embeds=hidden,
        attention_mask=attention_mask,
        allow_is_bidirectional_skip=not materialize,
    )


def cache_frozen_prefix(model: FewShotModel, batch: Mapping[str, Tensor], first: int) -> dict:
    """Add the hidden states entering layer ``first`` (no graph) to a copy of ``batch``.

    A batch that already carries the states entering a lower layer continues from them (the
    same frozen layers, run once); one cached at a higher layer is recomputed from the start.
    """
    base = model.base_encoder
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(batch["input_ids"])
    start = int(batch[PREFIX_LAYER_KEY]) if PREFIX_KEY in batch else 0

    def prefix(attention_mask: Tensor, **per_token: Tensor) -> Tensor:
        if start:
            hidden = per_token[PREFIX_KEY]
        else:
            hidden = base.embeddings(
                input_ids=per_token["input_ids"], token_type_ids=per_token.get("token_type_ids")
            )
            project = getattr(base, "embeddings_project", None)  # ELECTRA: embedding != hidden
            if project is not None:
                hidden = project(hidden)
        ext = _mask(model, hidden, attention_mask)
        for layer in encoder_layers(model)[start:first]:
            hidden = layer(hidden, ext)
        return hidden

    if start > first:  # cached above the layer asked for: recompute from the embeddings
        start = 0
    per_token = {k: batch[k] for k in _PER_TOKEN_KEYS if k in batch and (start or k != PREFIX_KEY)}
    with torch.no_grad():
        if start == first:
            hidden = batch[PREFIX_KEY]
        elif model.task == "sequence":  # pooled later: padded positions may be left at zero
            hidden = in_length_chunks(prefix, mask, pad_to=mask.shape[1], **per_token)
        else:
            hidden = prefix(mask, **per_token)
    out = dict(batch)
    out["attention_mask"] = mask
    out[PREFIX_KEY], out[PREFIX_LAYER_KEY] = hidden, first
    return out


def extended_mask(model: FewShotModel, batch: Mapping[str, Tensor]) -> Tensor:
    """The 4-D attention bias the encoder layers take, from ``batch["attention_mask"]``.

    Always a tensor (Transformers would return None for an unpadded batch, a value-dependent
    choice that must not happen under ``vmap``).
    """
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    dtype = model.head.weight.dtype
    probe = torch.empty(*ids.shape, 1, dtype=dtype, device=ids.device)
    return _mask(model, probe, mask, materialize=True)


def _own(fast: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {n[len(prefix) :]: t for n, t in fast.items() if n.startswith(prefix)}


def layered_hidden(
    model: FewShotModel, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor]
) -> Tensor:
    """The encoder's last hidden states ``(B, T, H)`` layer by layer, ``fast`` replacing tensors.

    Starts from ``batch[PREFIX_KEY]`` at layer ``batch[PREFIX_LAYER_KEY]`` when the frozen
    prefix is cached, and uses ``batch[EXT_MASK_KEY]`` as the attention bias when given (under
    ``vmap`` it must be: Transformers' mask builder branches on the mask's values).
    """
    mask = batch.get("attention_mask")
    mask = torch.ones_like(batch["input_ids"]) if mask is None else mask
    prefixes = {id(m): name + "." for name, m in model.named_modules()}
    if PREFIX_KEY in batch:
        hidden, first = batch[PREFIX_KEY], int(batch[PREFIX_LAYER_KEY])
    else:
        embeddings = model.base_encoder.embeddings
        inputs = {"input_ids": batch["input_ids"], "token_type_ids": batch.get("token_type_ids")}
        hidden = functional_call(embeddings, _own(fast, prefixes[id(embeddings)]), (), inputs)
        project = getattr(model.base_encoder, "embeddings_project", None)  # as ElectraModel does
        if project is not None:
            hidden = functional_call(project, _own(fast, prefixes[id(project)]), (hidden,))
        first = 0
    ext = batch[EXT_MASK_KEY] if EXT_MASK_KEY in batch else _mask(model, hidden, mask)
    for layer in encoder_layers(model)[first:]:
        hidden = functional_call(layer, _own(fast, prefixes[id(layer)]), (hidden, ext))
    return hidden


def layered_forward(
    model: FewShotModel, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
) -> Tensor:
    """`FewShotModel.forward` spelled out layer by layer (`layered_embed`, head)."""
    hidden = layered_embed(model, fast, batch)
    logits = functional_call(model.head, _own(fast, "head."), (hidden,))
    return logits[..., :n_way]


def layered_embed(
    model: FewShotModel, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor]
) -> Tensor:
    """`FewShotModel.embed` spelled out layer by layer (`layered_hidden`, then the pooling),
    starting from the cached frozen prefix when ``batch`` carries one."""
    if model.task != "sequence":
        return layered_hidden(model, fast, batch)
    mask = batch.get("attention_mask")
    mask = torch.ones_like(batch["input_ids"]) if mask is None else mask
    fixed = {k: batch[k] for k in (PREFIX_LAYER_KEY,) if k in batch}

    def pooled(attention_mask: Tensor, **per_token: Tensor) -> Tensor:
        hidden = layered_hidden(
            model, fast, {**fixed, **per_token, "attention_mask": attention_mask}
        )
        # Same pooling as FewShotModel.embed (tests check the two paths agree).
        return hidden[:, 0] if model.pooling == "cls" else mean_pool(hidden, attention_mask)

    per_token = {k: batch[k] for k in (*_PER_TOKEN_KEYS, EXT_MASK_KEY) if k in batch}
    if EXT_MASK_KEY in batch:  # under vmap (one attention bias for the whole batch): as it is
        return pooled(mask, **per_token)
    return in_length_chunks(pooled, mask, **per_token)


def maybe_cache_prefix(
    algo: object, *batches: Mapping[str, Tensor]
) -> tuple[Mapping[str, Tensor], ...]:
    """Apply the algorithm config's ``frozen_prefix_cache`` to ``batches`` (support, query, ...)."""
    setting = getattr(algo.config, "frozen_prefix_cache", "off")
    model = algo.model
    first = frozen_prefix_layer(model, [*algo.inner_names, *algo.outer_names])
    if (
        setting == "off"
        or first == 0
        or (setting == "auto" and prefix_dropout_active(model, first))
    ):
        # A prefix cached by a caller (the adaptation policy) stays only where it is frozen.
        return tuple(without_prefix_above(b, first) for b in batches)
    return tuple(cache_frozen_prefix(model, b, first) for b in batches)


def without_prefix_above(batch: Mapping[str, Tensor], first: int) -> Mapping[str, Tensor]:
    """``batch`` without its cached prefix when that ends above layer ``first`` (a layer the
    caller trains would be skipped)."""
    if PREFIX_KEY in batch and int(batch[PREFIX_LAYER_KEY]) > first:
        return {k: v for k, v in batch.items() if k not in (PREFIX_KEY, PREFIX_LAYER_KEY)}
    return batch


@contextlib.contextmanager
def training_context(algo: object) -> Iterator[None]:
    """What the config asks for around one task's meta-training (layer checkpointing)."""
    if getattr(algo.config, "checkpointing", "none") == "layers":
        with checkpointed_layers(algo.model):
            yield
    else:
        yield
