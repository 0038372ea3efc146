"""Conjugate gradient on Hessian-vector products, over dicts of tensors.

iMAML needs ``x = (I + H/λ)^{-1} g`` where ``H`` is the support-loss Hessian at the adapted
weights. ``H`` is never formed: each conjugate-gradient iteration costs one Hessian-vector
product, i.e. one extra backward pass through a graph built once at the solution, so memory
does not depend on how many inner steps produced that solution.

Everything here works on ``dict[str, Tensor]`` (the same shape as the fast weights of the inner
loop) and is independent of models, so it can be checked on a random SPD system.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

TensorDict = dict[str, Tensor]
MatVec = Callable[[TensorDict], TensorDict]


def tree_dot(a: TensorDict, b: TensorDict) -> Tensor:
    """Inner product ``Σ_k <a[k], b[k]>`` of two dicts with the same keys and shapes."""
    first = next(iter(a.values()))
    total = torch.zeros((), dtype=first.dtype, device=first.device)
    for k in a:
        total = total + torch.sum(a[k] * b[k])
    return total


def _axpy(alpha: Tensor | float, x: TensorDict, y: TensorDict) -> TensorDict:
    """``alpha * x + y`` key by key."""
    return {k: y[k] + alpha * x[k] for k in y}


def hessian_vector_product(loss_fn: Callable[[TensorDict], Tensor], params: TensorDict) -> MatVec:
    """Build ``v -> H v`` for the Hessian of ``loss_fn`` at ``params``.

    The gradient graph is built once here (``create_graph=True``) and every product reuses it,
    so a conjugate-gradient solve of ``m`` iterations costs one forward, one backward and ``m``
    double-backward passes.

    Args:
        loss_fn (`Callable[[dict[str, Tensor]], Tensor]`):
            Scalar loss of the parameter dict (e.g. the support loss through
            ``functional_call``).
        params (`dict[str, Tensor]`):
            Point at which the Hessian is taken. They are detached here: the products carry no
            graph back to whatever produced ``params``.

    Returns:
        A function mapping a dict ``v`` (same keys/shapes) to the dict ``H v`` (detached).

    Example:
        ```python
        >>> hvp = hessian_vector_product(lambda p: (p["w"] ** 4).sum(), {"w": torch.ones(3)})
        >>> hvp({"w": torch.ones(3)})["w"]
        tensor([12., 12., 12.])
        ```
    """
    names = list(params)
    point = {k: params[k].detach().requires_grad_(True) for k in names}
    with torch.enable_grad():
        loss = loss_fn(point)
        grads = torch.autograd.grad(loss, [point[k] for k in names], create_graph=True)
    if not any(g.requires_grad for g in grads):
        # The loss is linear in params: the Hessian is exactly zero.
        return lambda v: {k: torch.zeros_like(v[k]) for k in names}

    def matvec(v: TensorDict) -> TensorDict:
        missing = set(names) - set(v)
        if missing:
            raise KeyError(f"Hessian-vector product: the vector lacks {sorted(missing)}")
        with torch.enable_grad():
            hv = torch.autograd.grad(
                grads,
                [point[k] for k in names],
                grad_outputs=[v[k].detach() for k in names],
                retain_graph=True,
                allow_unused=True,
            )
        return {
            k: (h.detach() if h is not None else torch.zeros_like(v[k]))
            for k, h in zip(names, hv, strict=True)
        }

    return matvec


@dataclass
class CGResult:
    """What a conjugate-gradient solve returns.

    Attributes:
        x: the approximate solution.
        iterations: matrix-vector products used.
        residual_norm: ``‖b − A x‖`` at the end (recursively updated, as in standard CG).
        converged: whether ``residual_norm <= tol * ‖b‖`` was reached.
        negative_curvature: whether CG stopped early because ``pᵀ A p <= 0`` (A not positive
            definite along ``p``: possible for a non-convex support loss with small λ).
    """

    x: TensorDict
    iterations: int
    residual_norm: float
    converged: bool
    negative_curvature: bool = False


def conjugate_gradient(
    matvec: MatVec,
    b: TensorDict,
    *,
    max_iter: int = 10,
    tol: float = 1e-10,
    x0: TensorDict | None = None,
) -> CGResult:
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` given only ``v -> A v``.

    Args:
        matvec (`Callable[[dict[str, Tensor]], dict[str, Tensor]]`):
            The product with ``A``.
        b (`dict[str, Tensor]`):
            Right-hand side.
        max_iter (`int`, defaults to 10):
            Most products with ``A``; iMAML uses a handful (5–20).
        tol (`float`, defaults to 1e-10):
            Stop when ``‖r‖ <= tol * ‖b‖`` (relative residual).
        x0 (`dict[str, Tensor]`, *optional*):
            Starting point; zero by default (then the first iterate is a multiple of ``b``).

    Returns:
        [`CGResult`]. When ``pᵀ A p <= 0`` it stops and returns the last iterate with
        ``negative_curvature=True`` rather than diverging.

    Example:
        ```python
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> res = conjugate_gradient(lambda v: {"x": A @ v["x"]}, {"x": torch.tensor([1.0, 2.0])})
        >>> res.x["x"]  # A^{-1} b = [1/11, 7/11]
        tensor([0.0909, 0.6364])
        ```
    """
    if max_iter < 1:
        raise ValueError(f"conjugate_gradient: max_iter must be >= 1, got {max_iter}")
    if tol < 0:
        raise ValueError(f"conjugate_gradient: tol must be >= 0, got {tol}")
    b = {k: t.detach() for k, t in b.items()}
    if x0 is None:
        x = {k: torch.zeros_like(t) for k, t in b.items()}
        r = dict(b)
    else:
        x = {k: x0[k].detach().clone() for k in b}
        ax = matvec(x)
        r = {k: b[k] - ax[k] for k in b}
    p = dict(r)
    rs = tree_dot(r, r)
    threshold = tol * float(tree_dot(b, b).sqrt())
    iterations = 0
    if float(rs.sqrt()) <= threshold:
        return CGResult(x, 0, float(rs.sqrt()), True)
    for _ in range(max_iter):
        ap = matvec(p)
        iterations += 1
        curvature = tree_dot(p, ap)
        if float(curvature) <= 0:
            return CGResult(x, iterations, float(rs.sqrt()), False, negative_curvature=True)
        alpha = rs / curvature
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rs_new = tree_dot(r, r)
        if float(rs_new.sqrt()) <= threshold:
            return CGResult(x, iterations, float(rs_new.sqrt()), True)
        p = _axpy(rs_new / rs, p, r)
        rs = rs_new
    return CGResult(x, iterations, float(rs.sqrt()), False)


def solve_proximal_system(
    loss_fn: Callable[[TensorDict], Tensor],
    params: TensorDict,
    rhs: TensorDict,
    lam: float,
    *,
    max_iter: int = 10,
    tol: float = 1e-10,
) -> CGResult:
    """Solve ``(I + H/λ) x = rhs``, ``H`` the Hessian of ``loss_fn`` at ``params`` (iMAML).

    Args:
        loss_fn (`Callable[[dict[str, Tensor]], Tensor]`): the support loss ``L_S(φ)``.
        params (`dict[str, Tensor]`): the inner solution ``φ*``.
        rhs (`dict[str, Tensor]`): ``∇_φ L_Q(φ*)``.
        lam (`float`): the proximal strength ``λ > 0``.
        max_iter (`int`, defaults to 10), tol (`float`, defaults to 1e-10): see
            [`conjugate_gradient`].

    Returns:
        [`CGResult`] whose ``x`` is the implicit meta-gradient for the adapted parameters. When
        the very first direction has non-positive curvature (a non-convex loss, λ too small),
        ``x`` is ``rhs`` itself (the first-order gradient) and ``negative_curvature`` is set.
    """
    if not lam > 0:
        raise ValueError(f"the proximal strength lambda must be > 0, got {lam}")
    hvp = hessian_vector_product(loss_fn, params)

    def matvec(v: TensorDict) -> TensorDict:
        hv = hvp(v)
        return {k: v[k] + hv[k] / lam for k in v}

    result = conjugate_gradient(matvec, rhs, max_iter=max_iter, tol=tol)
    if result.negative_curvature and result.iterations == 1:
        # CG stopped before any update (x = 0 would silently zero the meta-gradient): fall back
        # to A ≈ I, i.e. the first-order gradient, as truncated-CG (Steihaug) methods do.
        result.x = {k: t.detach().clone() for k, t in rhs.items()}
    return result
