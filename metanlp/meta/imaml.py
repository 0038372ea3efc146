"""Implicit MAML (Rajeswaran, Finn, Kakade, Levine 2019): meta-gradients without unrolling.

Inner problem, with a proximal pull toward the meta-parameters θ of the adapted set:

    φ* = argmin_φ L_S(φ) + (λ/2)‖φ − θ‖²,

solved approximately by ``inner_steps`` steps of SGD / momentum / Adam through the shared
engine in ``"no_graph"`` mode (nothing is kept between steps). At a stationary point
``dφ*/dθ = (I + H/λ)^{-1}``, H the support-loss Hessian at φ*, so the meta-gradient of the
adapted tensors is ``(I + H/λ)^{-1} ∇_φ L_Q(φ*)``, found by ``cg_steps`` iterations of
conjugate gradient on Hessian-vector products (`metanlp.meta.cg`). Memory is one support graph
at φ* (kept for the products), whatever the number of inner steps. Meta-learned tensors
outside the adapted set (``outer_params``) get the ordinary query-loss gradient at φ*.
The products need double backward, so SDPA attention is switched to eager up front (as for
second-order MAML).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metanlp.meta.base import MetaAlgorithm, MetaConfig, model_mode, task_loss
from metanlp.meta.cg import solve_proximal_system, tree_dot
from metanlp.meta.inner import InnerLoopResult
from metanlp.meta.registry import register_algorithm


@dataclass
class IMAMLConfig(MetaConfig):
    """`MetaConfig` for iMAML.

    Args:
        lam (`float`, defaults to 1.0): proximal strength λ > 0; larger keeps φ* near θ
            (and makes ``I + H/λ`` better conditioned).
        cg_steps (`int`, defaults to 5): conjugate-gradient iterations (Hessian-vector products).
        cg_tol (`float`, defaults to 1e-10): CG stops early at relative residual ``cg_tol``.
        inner_steps (`int`, defaults to 10): steps on the proximal inner problem (no graph is
            kept, so many steps cost time, not memory).

    Example:
        ```python
        >>> IMAMLConfig(params="lora", inner_steps=20, inner_lr=1e-2, lam=2.0, cg_steps=5)
        ```
    """

    inner_steps: int = 10
    lam: float = 1.0
    cg_steps: int = 5
    cg_tol: float = 1e-10

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.lam, (int, float)) and self.lam > 0):
            raise ValueError(f"IMAMLConfig: lam={self.lam!r} must be a number > 0.")
        if not (isinstance(self.cg_steps, int) and self.cg_steps >= 1):
            raise ValueError(f"IMAMLConfig: cg_steps={self.cg_steps!r} must be an int >= 1.")
        if not (isinstance(self.cg_tol, (int, float)) and self.cg_tol >= 0):
            raise ValueError(f"IMAMLConfig: cg_tol={self.cg_tol!r} must be a number >= 0.")
        if self.first_order:
            raise ValueError(
                "IMAMLConfig: first_order=True is not iMAML (its gradient is the implicit one, "
                "always second order through HVPs); use 'fomaml' for a first-order method."
            )


class IMAML(MetaAlgorithm):
    """iMAML over any adapted subset; see the module docstring for the gradient.

    `meta_backward` adds ``scale × (I + H/λ)^{-1} ∇_φ L_Q(φ*)`` to the ``.grad`` of the adapted
    meta-parameters and ``scale × ∇ L_Q(φ*)`` to the other meta-parameters. Metrics add
    ``cg_iterations``, ``cg_residual`` (relative residual of the linear solve) and
    ``cg_negative_curvature``.

    Example:
        ```python
        >>> algo = IMAML(model, IMAMLConfig(params="head", inner_steps=50, inner_lr=0.1))
        >>> algo.meta_backward(episode)
        ```
    """

    name = "imaml"
    config_class = IMAMLConfig

    def run_inner(
        self,
        fast: dict[str, Tensor],
        support: Mapping[str, Tensor],
        n_way: int,
        *,
        steps: int,
        mode: str,
        query: Mapping[str, Tensor] | None = None,
        grad_scale: float | None = None,
    ) -> InnerLoopResult:
        """Steps on ``L_S(φ) + (λ/2)‖φ − φ_0‖²`` (used by `adapt` too, so evaluation solves
        the same problem the meta-gradient assumes)."""
        anchor = {n: t.detach() for n, t in fast.items()}
        lam = float(self.config.lam)

        def proximal_loss(f: dict[str, Tensor]) -> Tensor:
            support_loss = task_loss(self.forward_with(f, support, n_way), support["labels"])
            prox = sum(((f[n] - anchor[n]).pow(2).sum() for n in f), start=support_loss * 0)
            return support_loss + 0.5 * lam * prox

        return self.inner(proximal_loss, anchor, steps=steps, mode=mode, grad_scale=grad_scale)

    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        support, query, n_way = self.unpack(episode)
        params = dict(self.model.named_parameters())
        inner, outer = self.inner_names, set(self.outer_names)
        with model_mode(self.model, self.config.train_dropout):
            fast0 = self.initial_fast_weights(support, n_way, training=False)
            result = self.run_inner(
                fast0, support, n_way, steps=self.config.inner_steps, mode="no_graph",
                grad_scale=grad_scale,
            )  # fmt: skip
            phi = {n: t.detach().requires_grad_(True) for n, t in result.fast.items()}
            others = [n for n in self.outer_names if n not in phi and params[n].requires_grad]
            with torch.enable_grad():
                logits = self.forward_with(phi, query, n_way)
                loss = task_loss(logits, query["labels"])
                grads = torch.autograd.grad(
                    loss, [phi[n] for n in inner] + [params[n] for n in others], allow_unused=True
                )
            query_grad = {
                n: (g if g is not None else torch.zeros_like(phi[n]))
                for n, g in zip(inner, grads[: len(inner)], strict=True)
            }
            solve = solve_proximal_system(
                lambda f: task_loss(self.forward_with(f, support, n_way), support["labels"]),
                phi, query_grad, float(self.config.lam),
                max_iter=self.config.cg_steps, tol=self.config.cg_tol,
            )  # fmt: skip
        with torch.no_grad():
            for n in inner:
                if n in outer:
                    _accumulate(params[n], solve.x[n], scale)
            for n, g in zip(others, grads[len(inner) :], strict=True):
                if g is not None:
                    _accumulate(params[n], g, scale)
        out = self.metrics(loss, logits, query, result)
        out["cg_iterations"] = float(solve.iterations)
        # 1.0 when CG met negative curvature (non-convex support loss, λ too small): the
        # gradient is then the last CG iterate (first order if CG could not step at all).
        out["cg_negative_curvature"] = float(solve.negative_curvature)
        norm = float(tree_dot(query_grad, query_grad).sqrt())
        out["cg_residual"] = solve.residual_norm / norm if norm > 0 else 0.0
        return out


def _accumulate(param: Tensor, grad: Tensor, scale: float) -> None:
    step = grad.detach() * scale
    param.grad = step.clone() if param.grad is None else param.grad + step


register_algorithm("imaml", IMAMLConfig, IMAML)
