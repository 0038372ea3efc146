"""The shared inner-loop engine: k differentiable (or detached) optimisation steps on fast weights.

Every gradient-based algorithm (MAML, FOMAML, ANIL, Meta-SGD, MAML++, Reptile, Proto-MAML,
iMAML) runs its support-set adaptation through `inner_loop`. The engine only knows about a dict
of fast tensors and a closure that maps it to a support loss (typically a
``torch.func.functional_call`` of the model with ``strict=False``, so tensors missing from the
dict, the frozen ones, are read from the module and never copied).

Three modes:

- ``"second_order"``: ``create_graph=True``; the result is differentiable with respect to the
  initial fast weights and the learning rates through every step (MAML).
- ``"first_order"``: gradients are detached, but the update ``φ - α·g`` stays in the graph, so
  ``∂φ_k/∂φ_0 = I`` and a backward of the query loss deposits ``∇_φ L_Q(φ_k)`` on ``φ_0``
  (FOMAML); learned rates still get their first-order gradient (``-g``).
- ``"no_graph"``: nothing is kept (evaluation, Reptile); the fast weights returned are detached, so memory
  does not grow over many evaluation episodes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metanlp.models import task_rows

INNER_MODES = ("second_order", "first_order", "no_graph")
INNER_OPTIMIZERS = ("sgd", "momentum", "adam")

LearningRate = float | Tensor | Mapping[str, float | Tensor]
"""One step's rate: a number, a scalar tensor, or per fast-weight name a number / tensor
(scalar or of the parameter's shape, as Meta-SGD learns it)."""

LRSchedule = LearningRate | Sequence[LearningRate]
"""A `LearningRate` for every step, or one per step (MAML++ LSLR); a short list repeats its last."""


@dataclass
class InnerOptimizer:
    """The update direction of an inner step; differentiable, state kept as tensors.

    Args:
        kind (`str`, defaults to ``"sgd"``): ``"sgd"``, ``"momentum"`` (heavy ball
            ``v = μ v + g``) or ``"adam"`` (bias-corrected; ``sqrt(v̂ + eps²)`` instead of
            ``sqrt(v̂) + eps`` so that double backward stays finite where a gradient is 0).
        momentum (`float`, defaults to 0.9): μ for ``"momentum"``.
        betas (`tuple[float, float]`, defaults to ``(0.9, 0.999)``): Adam's β1, β2.
        eps (`float`, defaults to 1e-8): Adam's ε.
    """

    kind: str = "sgd"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    state: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in INNER_OPTIMIZERS:
            raise ValueError(
                f"inner optimizer {self.kind!r} is not supported; use one of {INNER_OPTIMIZERS}."
            )

    def reset(self) -> None:
        self.state = {}

    def direction(self, name: str, grad: Tensor, step: int) -> Tensor:
        """Direction d such that the step is ``φ ← φ − lr · d`` (``step`` counts from 0)."""
        if self.kind == "sgd":
            return grad
        st = self.state.setdefault(name, {})
        if self.kind == "momentum":
            buf = grad if "v" not in st else self.momentum * st["v"] + grad
            st["v"] = buf
            return buf
        b1, b2 = self.betas
        m = (1 - b1) * grad if "m" not in st else b1 * st["m"] + (1 - b1) * grad
        v = (1 - b2) * grad * grad if "v" not in st else b2 * st["v"] + (1 - b2) * grad * grad
        st["m"], st["v"] = m, v
        t = step + 1
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        return m_hat / torch.sqrt(v_hat + self.eps**2)

    def detach_(self) -> None:
        for st in self.state.values():
            for k in st:
                st[k] = st[k].detach()


@dataclass
class InnerLoopResult:
    """What `inner_loop` returns.

    Attributes:
        fast (`dict[str, Tensor]`): the adapted fast weights φ_k (same keys as given).
        support_losses (`list[float]`): support loss before each step (``[0]`` is at φ_0).
        step_query_losses (`list[Tensor]`): query loss after each step, when a
            ``step_loss_fn`` was given (MAML++ multi-step loss); graph attached unless ``"no_graph"``.
        skipped_steps (`int`): steps skipped because the (unscaled) gradient was not finite
            (checked only under loss scaling, ``grad_scale``).
    """

    fast: dict[str, Tensor]
    support_losses: list[float] = field(default_factory=list)
    step_query_losses: list[Tensor] = field(default_factory=list)
    skipped_steps: int = 0


def _lr_for(schedule: LRSchedule, step: int, name: str, detach: bool) -> float | Tensor:
    if isinstance(schedule, Sequence) and not isinstance(schedule, (str, Tensor)):
        if len(schedule) == 0:
            raise ValueError("An inner learning-rate schedule must have at least one step.")
        schedule = schedule[min(step, len(schedule) - 1)]
    lr = schedule[name] if isinstance(schedule, Mapping) else schedule
    if isinstance(lr, Tensor) and detach:
        lr = lr.detach()
    return lr


def _gradients(
    loss: Tensor,
    names: list[str],
    tensors: list[Tensor],
    create_graph: bool,
    recompute: Callable[[], Tensor],
) -> tuple[Tensor, ...]:
    try:
        return torch.autograd.grad(loss, tensors, create_graph=create_graph, allow_unused=False)
    except RuntimeError as err:
        if "not have been used in the graph" not in str(err):
            raise
        unused = [
            n
            for n, g in zip(
                names,
                # The failed call freed the graph: rebuild the loss to name the culprits.
                torch.autograd.grad(recompute(), tensors, allow_unused=True),
                strict=True,
            )
            if g is None
        ]
        raise ValueError(
            f"The support loss does not depend on adapted parameters {unused[:8]}"
            f"{' ...' if len(unused) > 8 else ''}. Leave them out of the adapted set (e.g. the "
            "BERT pooler: load with add_pooling_layer=False) or choose another params value."
        ) from err


def inner_loop(
    support_loss_fn: Callable[[dict[str, Tensor]], Tensor],
    fast: Mapping[str, Tensor],
    *,
    steps: int,
    lr: LRSchedule,
    mode: str = "second_order",
    optimizer: InnerOptimizer | None = None,
    step_loss_fn: Callable[[dict[str, Tensor]], Tensor] | None = None,
    grad_scale: float | None = None,
) -> InnerLoopResult:
    """Run ``steps`` inner updates ``φ_{j+1} = φ_j − lr_j ⊙ d_j`` from ``fast``.

    Args:
        support_loss_fn (`Callable[[dict], Tensor]`): fast weights -> scalar support loss.
        fast (`Mapping[str, Tensor]`): initial fast weights φ_0, only the adapted tensors.
            In the training modes a tensor that carries a graph (a meta-parameter, or a head
            computed from prototypes) passes gradients back to where it came from; a tensor
            without ``requires_grad`` is treated as a constant starting point.
        steps (`int`): number of inner steps k (0 returns φ_0).
        lr (`LRSchedule`): learning rate(s), see `LRSchedule`.
        mode (`str`, defaults to ``"second_order"``): one of `INNER_MODES`.
        optimizer (`InnerOptimizer`, *optional*): SGD when omitted; its state is reset here.
        step_loss_fn (`Callable[[dict], Tensor]`, *optional*): evaluated after every step
            (multi-step query loss); results in ``step_query_losses``.
        grad_scale (`float`, *optional*): multiply the support loss by it before
            differentiating (fp16 loss scaling) and divide the gradients after; a step whose
            gradients are not finite is skipped and counted.

    Returns:
        `InnerLoopResult` with the adapted fast weights.

    Example:
        ```python
        >>> loss_fn = lambda f: functional_call(model, f, (), batch, strict=False).pow(2).mean()
        >>> res = inner_loop(loss_fn, {"head.weight": model.head.weight}, steps=3, lr=0.1)
        >>> res.fast["head.weight"].shape
        ```
    """
    if mode not in INNER_MODES:
        raise ValueError(f"mode={mode!r} is not an inner-loop mode; use one of {INNER_MODES}.")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be an int >= 0.")
    if grad_scale is not None and not (grad_scale > 0 and math.isfinite(grad_scale)):
        raise ValueError(f"grad_scale={grad_scale!r} must be a finite number > 0 (or None).")
    names = list(fast)
    if not names:
        raise ValueError("inner_loop got no fast weights to adapt.")
    opt = optimizer if optimizer is not None else InnerOptimizer()
    opt.reset()
    training = mode != "no_graph"
    create_graph = mode == "second_order"
    # Leaves without grad become differentiable views (same storage: detach() does not copy).
    current = {
        n: (t if training and t.requires_grad else t.detach().requires_grad_(True))
        for n, t in fast.items()
    }
    result = InnerLoopResult(fast=current)
    for step in range(steps):
        with torch.enable_grad():
            loss = support_loss_fn(current)
            result.support_losses.append(float(loss.detach()))
            scaled = loss * grad_scale if grad_scale is not None else loss
            tensors = [current[n] for n in names]
            grads = _gradients(
                scaled, names, tensors, create_graph, lambda c=current: support_loss_fn(c)
            )
        if not create_graph:
            grads = tuple(g.detach() for g in grads)
        # Only under loss scaling: an overflowed step is skipped (checking every gradient for
        # finiteness costs ~8 % of an all-parameter first-order meta-step on CPU).
        if grad_scale is not None:
            grads = tuple(g / grad_scale for g in grads)
        if grad_scale is not None and not _all_finite(grads):
            result.skipped_steps += 1
        else:
            current = _apply_step(current, names, grads, lr, step, opt, training)
        result.fast = current
        if step_loss_fn is not None:
            with torch.set_grad_enabled(training):
                result.step_query_losses.append(step_loss_fn(current))
    if not training:
        result.fast = {n: t.detach() for n, t in current.items()}
    return result


def _all_finite(tensors: Sequence[Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _apply_step(
    current: dict[str, Tensor],
    names: list[str],
    grads: tuple[Tensor, ...],
    lr: LRSchedule,
    step: int,
    opt: InnerOptimizer,
    training: bool,
) -> dict[str, Tensor]:
    new: dict[str, Tensor] = {}
    with torch.set_grad_enabled(training):
        for name, grad in zip(names, grads, strict=True):
            rate = _lr_for(lr, step, name, detach=not training)
            if isinstance(rate, Tensor) and rate.dim() and rate.shape != grad.shape:
                # A per-element rate of a head (Meta-SGD) meets a task head of another
                # number of rows: the rate's rows go with the head's (`task_rows`).
                rate = task_rows(rate, grad.shape[0])
            new[name] = current[name] - rate * opt.direction(name, grad, step)
    if not training:
        opt.detach_()
        new = {n: t.detach().requires_grad_(True) for n, t in new.items()}
    return new
