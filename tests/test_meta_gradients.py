"""Meta-gradients against independent references, in float64.

References: closed forms (linear regression, the softmax Hessian), central finite differences,
plain autograd on a ``copy.deepcopy``'d model, torch.optim's SGD/Adam steps.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from metanlp.meta import build_algorithm, inner_loop
from metanlp.meta.inner import InnerOptimizer
from metanlp.meta.mamlpp import msl_weights
from metanlp.models import FewShotModel

N_WAY = 3


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_model(seed: int = 0, **kwargs) -> FewShotModel:
    """A 2-layer BERT of width 16 in float64, eager attention, no dropout randomness needed."""
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        vocab_size=50, attn_implementation="eager",
    )  # fmt: skip
    model = FewShotModel(BertModel(config, add_pooling_layer=False).double(), max_ways=4, **kwargs)
    return model


class Ep:
    """The three fields `meta_backward` reads from an `Episode`."""

    def __init__(self, support, query, n_way=N_WAY):
        self.support, self.query, self.n_way = support, query, n_way


def batch(seed: int, n: int = 6, length: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # some padding, so the mask matters
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(n) % N_WAY}


EPISODE = Ep(batch(1), batch(2))


def flat_grads(algo) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in algo.meta_parameters()])


def meta_grad(algo, episode=EPISODE) -> torch.Tensor:
    for p in algo.meta_parameters():
        p.grad = None
    algo.meta_backward(episode)
    return flat_grads(algo)


def directional_fd(
    algo, direction: list[torch.Tensor], eps: float = 1e-5, episode=EPISODE
) -> float:
    """Central difference of the query loss after adaptation along ``direction`` (meta-params)."""
    params = algo.meta_parameters()

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
        metrics = algo.meta_backward(episode)
        value = metrics.get("msl_loss", metrics["query_loss"])  # MAML++ optimises the MSL mix
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
        return value

    return (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)


def random_direction(algo, seed: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in algo.meta_parameters()]


# ---- closed forms -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["second_order", "first_order"])
def test_inner_loop_linear_regression_matches_closed_form(mode):
    torch.manual_seed(0)
    xs, ys, xq, yq = torch.randn(8, 4), torch.randn(8), torch.randn(7, 4), torch.randn(7)
    xs, ys, xq, yq = (t.double() for t in (xs, ys, xq, yq))
    a_s, b_s = xs.T @ xs / 8, xs.T @ ys / 8
    a_q, b_q = xq.T @ xq / 7, xq.T @ yq / 7
    w0 = torch.randn(4, dtype=torch.float64, requires_grad=True)
    alpha, k = 0.3, 3
    res = inner_loop(
        lambda f: 0.5 * ((xs @ f["w"] - ys) ** 2).mean(), {"w": w0}, steps=k, lr=alpha, mode=mode
    )
    (0.5 * ((xq @ res.fast["w"] - yq) ** 2).mean()).backward()
    # closed form: w_k = M^k w0 + Σ_j M^j α b_s with M = I − α A_s; ∂L_Q/∂w0 = (M^k)ᵀ ∇L_Q(w_k)
    m = torch.eye(4, dtype=torch.float64) - alpha * a_s
    wk = torch.linalg.matrix_power(m, k) @ w0.detach()
    wk = wk + sum(torch.linalg.matrix_power(m, j) @ (alpha * b_s) for j in range(k))
    gq = a_q @ wk - b_q
    expected = torch.linalg.matrix_power(m, k).T @ gq if mode == "second_order" else gq
    torch.testing.assert_close(res.fast["w"].detach(), wk)
    torch.testing.assert_close(w0.grad, expected)


def test_maml_head_meta_gradient_matches_softmax_hessian_formula():
    """One inner step on the head: ∇ = G_Q(W1) − α H_S(W0)[G_Q(W1)] with CE's analytic Hessian."""
    model = tiny_model(head_init="random")
    alpha = 0.5
    algo = build_algorithm(
        "maml",
        model,
        {"params": "head", "inner_steps": 1, "inner_lr": alpha, "train_dropout": False},
    )
    got = meta_grad(algo)
    model.eval()
    with torch.no_grad():
        feats_s = model.embed(EPISODE.support["input_ids"], EPISODE.support["attention_mask"])
        feats_q = model.embed(EPISODE.query["input_ids"], EPISODE.query["attention_mask"])
    xs = torch.cat([feats_s, torch.ones(len(feats_s), 1, dtype=feats_s.dtype)], 1)  # bias as input
    xq = torch.cat([feats_q, torch.ones(len(feats_q), 1, dtype=feats_q.dtype)], 1)
    w0 = torch.cat([model.head.weight, model.head.bias[:, None]], 1).detach()[:N_WAY]

    def grad_ce(w, x, y):
        p = torch.softmax(x @ w.T, -1)
        return (p - F.one_hot(y, N_WAY).double()).T @ x / len(x)

    def hvp_ce(w, x, v):
        p = torch.softmax(x @ w.T, -1)  # (n, N)
        dz = x @ v.T  # directional change of the logits
        dp = p * dz - p * (p * dz).sum(-1, keepdim=True)  # (diag(p) − p pᵀ) dz
        return dp.T @ x / len(x)

    w1 = w0 - alpha * grad_ce(w0, xs, EPISODE.support["labels"])
    gq = grad_ce(w1, xq, EPISODE.query["labels"])
    expected = gq - alpha * hvp_ce(w0, xs, gq)
    got_w, got_b = model.head.weight.grad, model.head.bias.grad
    assert got.numel() == got_w.numel() + got_b.numel()
    torch.testing.assert_close(got_w[:N_WAY], expected[:, :-1])
    torch.testing.assert_close(got_b[:N_WAY], expected[:, -1])
    assert torch.all(got_w[N_WAY:] == 0)  # rows beyond n_way never enter the episode


# ---- finite differences on a tiny BERT ----------------------------------------------------------
@pytest.mark.parametrize("params", ["all", "top"])
def test_second_order_matches_finite_differences_and_differs_from_first_order(params):
    cfg = {
        "params": params,
        "top_layers": 1,
        "inner_steps": 2,
        "inner_lr": 0.5,
        "train_dropout": False,
    }
    algo = build_algorithm("maml", tiny_model(), cfg)
    g2 = meta_grad(algo)
    direction = random_direction(algo)
    fd = directional_fd(algo, direction)
    analytic = float(g2 @ torch.cat([d.reshape(-1) for d in direction]))
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)
    g1 = meta_grad(build_algorithm("fomaml", tiny_model(), cfg))
    assert (g1 - g2).norm() > 1e-3 * g2.norm()


def test_first_order_matches_plain_autograd_on_copied_model():
    cfg = {"params": "all", "inner_steps": 3, "inner_lr": 0.3, "train_dropout": False}
    model = tiny_model()
    reference = copy.deepcopy(model).eval()
    algo = build_algorithm("fomaml", model, cfg)
    meta_grad(algo)
    # Plain autograd: SGD steps on the copy's own parameters, then the query gradient there.
    params = [p for p in reference.parameters()]
    for _ in range(3):
        out = reference(
            EPISODE.support["input_ids"], EPISODE.support["attention_mask"], n_way=N_WAY
        )
        grads = torch.autograd.grad(F.cross_entropy(out, EPISODE.support["labels"]), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= 0.3 * g
    out = reference(EPISODE.query["input_ids"], EPISODE.query["attention_mask"], n_way=N_WAY)
    expected = torch.autograd.grad(F.cross_entropy(out, EPISODE.query["labels"]), params)
    for (name, p), e in zip(model.named_parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, msg=name)


def test_anil_equals_maml_with_head_inner_and_all_outer():
    """ANIL's features-once shortcut must give MAML(params=head, outer_params=all)'s gradient."""
    cfg = {"inner_steps": 2, "inner_lr": 0.5, "train_dropout": False}
    g_anil = meta_grad(build_algorithm("anil", tiny_model(), {**cfg, "params": "all"}))
    g_maml = meta_grad(
        build_algorithm("maml", tiny_model(), {**cfg, "params": "head", "outer_params": "all"})
    )
    torch.testing.assert_close(g_anil, g_maml)


def test_reptile_update_equals_definition():
    model = tiny_model()
    reference = copy.deepcopy(model).eval()
    algo = build_algorithm(
        "reptile",
        model,
        {"params": "all", "inner_steps": 3, "inner_lr": 0.2, "train_dropout": False},
    )
    before = [p.detach().clone() for p in model.parameters()]
    algo.meta_backward(EPISODE, scale=0.5)
    opt = torch.optim.SGD(reference.parameters(), lr=0.2)
    for _ in range(3):  # φ̃ by torch.optim.SGD on a copy
        opt.zero_grad()
        out = reference(
            EPISODE.support["input_ids"], EPISODE.support["attention_mask"], n_way=N_WAY
        )
        F.cross_entropy(out, EPISODE.support["labels"]).backward()
        opt.step()
    for p, b, adapted in zip(model.parameters(), before, reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, 0.5 * (b - adapted.detach()))
    epsilon = 0.1  # an outer SGD step of rate ε moves θ to θ + ε·scale·(φ̃ − θ)
    torch.optim.SGD(model.parameters(), lr=epsilon).step()
    for p, b, adapted in zip(model.parameters(), before, reference.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), b + epsilon * 0.5 * (adapted.detach() - b))


@pytest.mark.parametrize("name", ["metasgd", "mamlpp"])
def test_learned_inner_rates_get_finite_difference_gradients(name):
    cfg = {
        "params": "top",
        "top_layers": 1,
        "inner_steps": 2,
        "inner_lr": 0.3,
        "train_dropout": False,
    }
    if name == "mamlpp":
        cfg |= {
            "first_order_epochs": 0,
            "msl_epochs": 3,
        }  # second order with the multi-step loss on
    algo = build_algorithm(name, tiny_model(), cfg)
    assert algo.extra, "learned rates are extra meta-parameters"
    meta_grad(algo)
    lr_params = list(algo.extra.values())
    analytic_grads = [p.grad.clone() for p in lr_params]
    g = torch.Generator().manual_seed(5)
    direction_lr = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in lr_params]
    others = [torch.zeros_like(p) for p in algo.meta_parameters()[: -len(lr_params)]]
    fd = directional_fd(algo, others + direction_lr)
    analytic = sum(float((a * d).sum()) for a, d in zip(analytic_grads, direction_lr, strict=True))
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)
    assert all(float(a.abs().sum()) > 0 for a in analytic_grads)


def test_mamlpp_derivative_order_annealing_and_msl():
    cfg = {
        "params": "top",
        "top_layers": 1,
        "inner_steps": 2,
        "inner_lr": 0.3,
        "train_dropout": False,
    }
    annealed = build_algorithm(
        "mamlpp", tiny_model(), {**cfg, "first_order_epochs": 2, "msl_epochs": 0}
    )
    first = build_algorithm("mamlpp", tiny_model(), {**cfg, "first_order": True, "msl_epochs": 0})
    second = build_algorithm(
        "mamlpp", tiny_model(), {**cfg, "first_order_epochs": 0, "msl_epochs": 0}
    )
    torch.testing.assert_close(meta_grad(annealed), meta_grad(first))  # epoch 0 < 2: first order
    annealed.set_epoch(2)
    torch.testing.assert_close(meta_grad(annealed), meta_grad(second))
    assert annealed.model.base_encoder.config._attn_implementation == "eager"


def test_msl_weights_anneal_toward_the_last_step():
    assert msl_weights(4, 0, 10) == pytest.approx([0.25] * 4)
    previous_last = 0.0
    for epoch in range(12):
        w = msl_weights(4, epoch, 10, 0.03)
        assert sum(w) == pytest.approx(1.0)
        assert w[-1] >= previous_last and all(x >= 0.03 / 4 - 1e-12 for x in w)
        previous_last = w[-1]
    assert msl_weights(4, 10, 10, 0.03) == pytest.approx([0.0075] * 3 + [1 - 3 * 0.0075])


# ---- the inner optimisers and loss scaling ------------------------------------------------------
@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_inner_optimizers_follow_torch_optim_and_differentiate(kind):
    torch.manual_seed(0)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    w0 = torch.randn(3, dtype=torch.float64)
    opt_ref = torch.nn.Parameter(w0.clone())
    torch_opt = (
        torch.optim.SGD([opt_ref], lr=0.1, momentum=0.9)
        if kind == "momentum"
        else torch.optim.Adam([opt_ref], lr=0.1, eps=1e-12)
    )
    for _ in range(4):
        torch_opt.zero_grad()
        ((x @ opt_ref - y) ** 2).mean().backward()
        torch_opt.step()
    ours = InnerOptimizer(kind, momentum=0.9, eps=1e-12)
    w = w0.clone().requires_grad_(True)
    res = inner_loop(
        lambda f: ((x @ f["w"] - y) ** 2).mean(),
        {"w": w},
        steps=4,
        lr=0.1,
        mode="second_order",
        optimizer=ours,
    )
    torch.testing.assert_close(res.fast["w"].detach(), opt_ref.detach())
    # The unrolled optimiser is differentiable: compare with finite differences in w0.
    (grad,) = torch.autograd.grad(res.fast["w"].sum(), w)
    eps = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = eps
        plus = inner_loop(
            lambda f: ((x @ f["w"] - y) ** 2).mean(),
            {"w": w0 + e},
            steps=4,
            lr=0.1,
            mode="no_graph",
            optimizer=ours,
        )
        minus = inner_loop(
            lambda f: ((x @ f["w"] - y) ** 2).mean(),
            {"w": w0 - e},
            steps=4,
            lr=0.1,
            mode="no_graph",
            optimizer=ours,
        )
        assert float(grad[i]) == pytest.approx(
            float((plus.fast["w"].sum() - minus.fast["w"].sum()) / (2 * eps)), rel=1e-5
        )


def test_grad_scale_unscales_and_skips_non_finite_steps():
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    w = torch.zeros(2, dtype=torch.float64)

    def loss(f):
        return ((x @ f["w"] - y) ** 2).mean()

    plain = inner_loop(loss, {"w": w}, steps=3, lr=0.1, mode="no_graph")
    scaled = inner_loop(loss, {"w": w}, steps=3, lr=0.1, mode="no_graph", grad_scale=1024.0)
    torch.testing.assert_close(plain.fast["w"], scaled.fast["w"])
    overflow = inner_loop(
        lambda f: 1e3 * loss(f), {"w": w}, steps=3, lr=0.1, mode="no_graph", grad_scale=1e308
    )
    assert overflow.skipped_steps == 3
    torch.testing.assert_close(overflow.fast["w"], w)
