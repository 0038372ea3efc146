"""Task batching: the tasks of a meta-batch in one ``torch.func.vmap`` pass, per-task fast weights.

``vmap`` maps a single-task meta-loss over a leading task axis: the fast weights start unbatched
(θ, shared), become per-task after the first inner step, and the frozen weights are never
batched or copied, so a frozen ``Linear`` runs as one matmul over all tasks' rows while a LoRA
factor runs as a batched matmul. Inner gradients come from ``torch.func.grad`` (which composes
with the outer ``backward``: second order needs no ``create_graph`` flag), and the outer
gradient is one backward of the summed query losses.

Why not ``vmap`` over ``FewShotModel.forward`` as is: Transformers' mask builder
(``masking_utils._ignore_bidirectional_mask_sdpa``) calls ``padding_mask.all()`` to decide
whether it may drop the mask, which is data-dependent control flow that ``vmap`` refuses. The
batched path therefore builds the 4-D attention bias outside ``vmap`` and runs the layers through
`metanlp.meta.efficient.layered_forward`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from metanlp.meta.efficient import (
    EXT_MASK_KEY,
    PREFIX_LAYER_KEY,
    encoder_layers,
    extended_mask,
    layered_forward,
    maybe_cache_prefix,
)
from metanlp.meta.helpers import accuracy, model_mode, task_loss
from metanlp.meta.inner import _lr_for

if TYPE_CHECKING:  # base imports this module; the algorithm is only a type here
    from metanlp.meta.base import MetaAlgorithm


def _composite_layer_norm(module: nn.LayerNorm) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        dims = tuple(range(-len(module.normalized_shape), 0))
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).pow(2).mean(dims, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + module.eps)
        if module.weight is not None:
            out = out * module.weight + module.bias
        return out

    return forward


@contextlib.contextmanager
def composite_layer_norms(model: nn.Module) -> Iterator[None]:
    """Run ``nn.LayerNorm`` as elementary ops while active.

    Under ``vmap`` with per-task LayerNorm weights, torch 2.13's batching of the fused
    ``native_layer_norm`` double backward gets the mixed second derivative (weight of the
    preceding Linear x LayerNorm weight) wrong, by about 1e-4 relative on a tiny BERT; the
    composite form is exact (tested against the per-task loop).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    try:
        for m in norms:
            m.forward = _composite_layer_norm(m)
        yield
    finally:
        for m in norms:
            m.__dict__.pop("forward", None)


def _stack(batches: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Stack per-task batches on a new axis 0, right-padding the sequence axis to the longest."""
    sizes = {int(b["input_ids"].shape[0]) for b in batches}
    if len(sizes) != 1:
        raise ValueError(
            f"task_batching='vmap' needs the same number of examples in every task's support "
            f"(and query) set, got {sorted(sizes)}; sample episodes with fixed N, K and Q or use "
            "task_batching='loop'."
        )
    length = max(int(b["input_ids"].shape[1]) for b in batches)
    out: dict[str, Tensor] = {}
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        if key not in batches[0]:
            continue
        fill = -100 if key == "labels" else 0
        parts = []
        for b in batches:
            t = b[key] if key in b else torch.ones_like(b["input_ids"])
            if t.dim() == 2 and t.shape[1] < length:
                t = F.pad(t, (0, length - t.shape[1]), value=fill)
            parts.append(t)
        out[key] = torch.stack(parts)
    return out


def _prepare(algo: MetaAlgorithm, batches: Sequence[Mapping[str, Tensor]]) -> dict[str, Any]:
    """Stacked batch with the attention bias (and cached prefix) computed outside ``vmap``."""
    encoder_layers(algo.model)  # the blocks run one by one: BERT-family only, else a clear error
    stacked = _stack(batches)
    tasks, size = stacked["input_ids"].shape[:2]
    flat = {k: v.flatten(0, 1) for k, v in stacked.items()}
    (flat,) = maybe_cache_prefix(algo, flat)
    out = {k: v.unflatten(0, (tasks, size)) for k, v in flat.items() if isinstance(v, Tensor)}
    out[EXT_MASK_KEY] = extended_mask(algo.model, flat).unflatten(0, (tasks, size))
    first = flat.get(PREFIX_LAYER_KEY)
    return out if first is None else {**out, PREFIX_LAYER_KEY: first}


def vmap_meta_backward(
    algo: MetaAlgorithm, episodes: Sequence[Any], scale: float = 1.0
) -> list[dict[str, float]]:
    """`MetaAlgorithm.meta_backward` for several episodes at once, the same gradient as the loop.

    Args:
        algo (`MetaAlgorithm`): a MAML-path algorithm (MAML, FOMAML, Meta-SGD; SGD inner steps).
        episodes (sequence of `Episode`): tasks with equal ``n_way`` and equal support / query sizes.
        scale (`float`, defaults to 1.0): each task's meta-gradient is multiplied by it.
        The caller (`MetaAlgorithm.meta_backward_batch`) has checked that ``algo`` is on the plain
        MAML path (`MetaAlgorithm.vmap_problems`).

    Returns:
        One metrics dict per episode (``query_loss``, ``query_acc``, ``support_loss``).

    Example:
        ```python
        >>> vmap_meta_backward(algo, episodes, scale=1 / len(episodes))
        ```
    """
    if not episodes:
        raise ValueError("vmap_meta_backward got no episodes.")
    unpacked = [algo.unpack(e) for e in episodes]
    ways = {n for _, _, n in unpacked}
    if len(ways) != 1:
        raise ValueError(
            f"task_batching='vmap' needs one n_way per meta-batch, got {sorted(ways)}."
        )
    n_way = ways.pop()
    model, config = algo.model, algo.config
    steps, first_order = config.inner_steps, not algo.second_order_now()
    lr = algo.inner_lr_schedule(steps)
    with model_mode(model, config.train_dropout):
        support = _prepare(algo, [s for s, _, _ in unpacked])
        query = _prepare(algo, [q for _, q, _ in unpacked])
        fast0 = algo.initial_fast_weights(unpacked[0][0], n_way, training=True)
        layer = {k: support.pop(k) for k in (PREFIX_LAYER_KEY,) if k in support}
        query.pop(PREFIX_LAYER_KEY, None)

        def loss_fn(fast: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
            return task_loss(
                layered_forward(model, fast, {**batch, **layer}, n_way), batch["labels"]
            )

        def with_value(fast: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            loss = loss_fn(fast, batch)
            return loss, loss.detach()

        def one_task(s: dict[str, Tensor], q: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
            fast, first_loss = fast0, None
            for step in range(steps):
                g, value = grad(with_value, has_aux=True)(fast, s)
                first_loss = value if first_loss is None else first_loss
                if first_order:
                    g = {n: t.detach() for n, t in g.items()}
                fast = {n: fast[n] - _lr_for(lr, step, n, False) * g[n] for n in fast}
            logits = layered_forward(model, fast, {**q, **layer}, n_way)
            support_loss = first_loss if first_loss is not None else logits.new_zeros(())
            return task_loss(logits, q["labels"]), logits, support_loss

        randomness = "different" if model.training else "error"
        with composite_layer_norms(model):
            losses, logits, support_losses = vmap(one_task, randomness=randomness)(support, query)
    params = [p for p in algo.meta_parameters() if p.requires_grad]
    if params and losses.requires_grad:
        torch.autograd.backward(losses.sum() * scale, inputs=params)
    out = []
    for i in range(len(unpacked)):
        labels = query["labels"][i]
        m = {"query_loss": float(losses[i].detach()), "query_acc": accuracy(logits[i], labels)}
        if steps:
            m["support_loss"], m["inner_skipped"] = float(support_losses[i]), 0.0
        out.append(m)
    return out
