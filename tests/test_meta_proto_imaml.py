"""ProtoNet, Proto-MAML and iMAML: the math (float64, against independent references) and
smoke runs on the real MiniLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metanlp.meta.cg import conjugate_gradient, hessian_vector_product, solve_proximal_system
from metanlp.meta.prototypes import (
    class_prototypes,
    prototype_head,
    squared_euclidean_logits,
)

f64 = torch.float64


# ---------------------------------------------------------------- conjugate gradient / HVP


def _split(vec: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"a": vec[:6].reshape(2, 3), "b": vec[6:]}


def _join(d: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([d["a"].flatten(), d["b"]])


def test_cg_solves_random_spd_system():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(10, 10, generator=gen, dtype=f64)
    a = m @ m.T + 0.1 * torch.eye(10, dtype=f64)
    b = torch.randn(10, generator=gen, dtype=f64)
    res = conjugate_gradient(lambda v: _split(a @ _join(v)), _split(b), max_iter=50, tol=1e-12)
    assert res.converged and not res.negative_curvature
    # Exact arithmetic would need at most n=10 iterations; allow for rounding on a bad condition.
    assert res.iterations <= 30
    torch.testing.assert_close(_join(res.x), torch.linalg.solve(a, b), rtol=1e-8, atol=1e-9)
    # Too few iterations must say so.
    short = conjugate_gradient(lambda v: _split(a @ _join(v)), _split(b), max_iter=2)
    assert not short.converged and short.iterations == 2


def test_cg_stops_on_negative_curvature():
    a = torch.diag(torch.tensor([1.0, -2.0], dtype=f64))
    res = conjugate_gradient(
        lambda v: {"x": a @ v["x"]}, {"x": torch.tensor([1.0, 1.0], dtype=f64)}
    )
    assert res.negative_curvature and not res.converged


def test_hvp_matches_full_hessian():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=gen, dtype=f64)
    y = torch.randn(5, generator=gen, dtype=f64)
    theta = torch.randn(9, generator=gen, dtype=f64)

    def loss_vec(t: torch.Tensor) -> torch.Tensor:
        p = _split(t)
        # Non-quadratic so the Hessian depends on the point.
        return torch.sum(torch.tanh(x @ p["a"].T).sum(-1) * p["b"].sum() - y) ** 2 / 5

    hess = torch.autograd.functional.hessian(loss_vec, theta)
    v = torch.randn(9, generator=gen, dtype=f64)
    hvp = hessian_vector_product(lambda p: loss_vec(_join(p)), _split(theta))
    torch.testing.assert_close(_join(hvp(_split(v))), hess @ v)
    # The closure is reusable: a second product with another vector.
    torch.testing.assert_close(_join(hvp(_split(2 * v))), 2 * hess @ v)


def test_proximal_system_solution():
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(9, 9, generator=gen, dtype=f64)
    h = m @ m.T
    g = torch.randn(9, generator=gen, dtype=f64)
    point = torch.randn(9, generator=gen, dtype=f64)
    lam = 3.0
    res = solve_proximal_system(
        lambda p: 0.5 * _join(p) @ h @ _join(p), _split(point), _split(g), lam, max_iter=40
    )
    expected = torch.linalg.solve(torch.eye(9, dtype=f64) + h / lam, g)
    torch.testing.assert_close(_join(res.x), expected, rtol=1e-7, atol=1e-8)
    with pytest.raises(ValueError, match="lambda must be > 0"):
        solve_proximal_system(lambda p: p["a"].sum(), _split(point), _split(g), 0.0)


# ---------------------------------------------------------------- prototype math


def test_prototypes_sequence_and_token_level():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(6, 4, generator=gen, dtype=f64)
    labels = torch.tensor([2, 0, 1, 2, 0, 0])
    protos = class_prototypes(feats, labels, 3)
    for n in range(3):
        torch.testing.assert_close(protos[n], feats[labels == n].mean(0))

    tok = torch.randn(2, 5, 4, generator=gen, dtype=f64)
    tok_labels = torch.tensor([[-100, 0, 1, 1, -100], [-100, 2, 0, -100, -100]])
    tok_protos = class_prototypes(tok, tok_labels, 3)
    torch.testing.assert_close(tok_protos[0], (tok[0, 1] + tok[1, 2]) / 2)
    torch.testing.assert_close(tok_protos[1], (tok[0, 2] + tok[0, 3]) / 2)
    torch.testing.assert_close(tok_protos[2], tok[1, 1])

    with pytest.raises(ValueError, match=r"class\(es\) \[3\] have no support example"):
        class_prototypes(feats, labels, 4)
    with pytest.raises(ValueError, match="must lie in 0..1"):
        class_prototypes(feats, labels, 2)


def test_euclidean_logits_and_prototype_head():
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(7, 5, generator=gen, dtype=f64)
    protos = torch.randn(4, 5, generator=gen, dtype=f64)
    logits = squared_euclidean_logits(feats, protos)
    torch.testing.assert_close(logits, -(torch.cdist(feats, protos) ** 2))
    weight, bias = prototype_head(protos)
    torch.testing.assert_close(weight, 2 * protos)
    torch.testing.assert_close(bias, -(protos**2).sum(-1))
    head_logits = F.linear(feats, weight, bias)
    # Head logits = −‖f − c_n‖² + ‖f‖²: a per-example constant, so identical softmax.
    diff = head_logits - logits
    torch.testing.assert_close(diff, (feats**2).sum(-1, keepdim=True).expand_as(diff))
    torch.testing.assert_close(head_logits.log_softmax(-1), logits.log_softmax(-1))
    # Token-shaped features work the same way.
    tok = feats.reshape(1, 7, 5)
    torch.testing.assert_close(squared_euclidean_logits(tok, protos)[0], logits)
