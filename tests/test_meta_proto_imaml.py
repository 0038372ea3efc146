"""ProtoNet, Proto-MAML and iMAML: the math (float64, against independent references) and
smoke runs on the real MiniLM."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch
import torch.nn.functional as F
from datasets import load_from_disk
from torch.func import functional_call
from transformers import BertConfig, BertModel

from metanlp.episodes import ClassificationSampler, Episode, NERSampler
from metanlp.meta import build_algorithm
from metanlp.meta.cg import conjugate_gradient, hessian_vector_product, solve_proximal_system
from metanlp.meta.prototypes import (
    class_prototypes,
    prototype_head,
    squared_euclidean_logits,
)
from metanlp.models import FewShotModel

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
    # A concave loss with a weak pull: I + H/λ = -3 I. CG cannot step; the fallback is rhs.
    concave = solve_proximal_system(
        lambda p: -2 * (_join(p) ** 2).sum(), _split(point), _split(g), 1.0
    )
    assert concave.negative_curvature and concave.iterations == 1
    torch.testing.assert_close(_join(concave.x), g)
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


# ---------------------------------------------------------------- tiny float64 model


N_WAY = 3
TAGS = ["O", "alpha", "beta"]  # a 2-type IO NER episode: 3 labels incl. O


def tiny_model(task: str = "sequence", seed: int = 0) -> FewShotModel:
    """2-layer BERT of width 16 in float64, eager attention, no dropout."""
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        vocab_size=50, attn_implementation="eager",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return FewShotModel(BertModel(config, add_pooling_layer=False).double(), task=task, max_ways=4)


def tiny_batch(seed: int, task: str, n: int = 6, length: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0  # padding, so the mask matters
    if task == "sequence":
        labels = torch.arange(n) % N_WAY
    else:
        labels = torch.arange(n * length).reshape(n, length) % N_WAY
        labels[:, 0] = -100  # [CLS]-like and padded positions are ignored
        labels[0, -2:] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def tiny_episode(task: str, seed: int = 1) -> Episode:
    """A real `Episode`; for NER ``n_way`` counts types and ``num_labels`` adds O."""
    ner = task == "token"
    return Episode(
        support=tiny_batch(seed, task), query=tiny_batch(seed + 100, task),
        n_way=N_WAY - 1 if ner else N_WAY, label_names=TAGS[1:] if ner else ["a", "b", "c"],
        kind="ner" if ner else "classification", task="tiny", support_inputs=[],
        query_inputs=[], support_targets=[], query_targets=[], tag_names=TAGS if ner else None,
    )  # fmt: skip


def zero_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def labelled(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference flattening: keep rows / tokens whose label is not -100."""
    feats, labels = feats.reshape(-1, feats.shape[-1]), labels.reshape(-1)
    return feats[labels != -100], labels[labels != -100]


def reference_protonet_loss(model: FewShotModel, episode: Episode) -> torch.Tensor:
    """ProtoNet's query loss written out with a Python loop and pairwise differences."""
    fs, ys = labelled(model.embed(episode.support["input_ids"], episode.support["attention_mask"]),
                      episode.support["labels"])  # fmt: skip
    fq, yq = labelled(model.embed(episode.query["input_ids"], episode.query["attention_mask"]),
                      episode.query["labels"])  # fmt: skip
    protos = torch.stack([fs[ys == n].mean(0) for n in range(episode.num_labels)])
    logits = -((fq[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    return F.cross_entropy(logits, yq)


TASKS = pytest.mark.parametrize("task", ["sequence", "token"], ids=["seq", "ner"])


@TASKS
def test_protonet_logprobs_and_meta_gradient_match_plain_autograd(task):
    model = tiny_model(task)
    reference = copy.deepcopy(model)
    episode = tiny_episode(task)
    algo = build_algorithm("protonet", model, {"params": "top", "top_layers": 1})
    assert all(".layer.1." in n for n in algo.outer_names)  # top layer, no head

    fast = algo.adapt(episode.support, episode.num_labels)
    log_probs = algo.predict_logits(fast, episode.query, episode.num_labels).log_softmax(-1)
    with torch.no_grad():
        fs, ys = labelled(reference.embed(episode.support["input_ids"], episode.support["attention_mask"]),
                          episode.support["labels"])  # fmt: skip
        fq = reference.embed(episode.query["input_ids"], episode.query["attention_mask"])
        protos = torch.stack([fs[ys == n].mean(0) for n in range(episode.num_labels)])
        dist = ((fq.unsqueeze(-2) - protos) ** 2).sum(-1)
    torch.testing.assert_close(log_probs, (-dist).log_softmax(-1))

    metrics = algo.meta_backward(episode, scale=0.5)
    loss = reference_protonet_loss(reference, episode)
    assert metrics["query_loss"] == pytest.approx(float(loss.detach()), rel=1e-12)
    (0.5 * loss).backward()
    ref_params = dict(reference.named_parameters())
    for name, p in algo.model.named_parameters():
        if name in algo.outer_names:
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-10, atol=1e-12)
        else:
            assert p.grad is None, f"{name} is not meta-trained but got a gradient"


@TASKS
def test_protomaml_head_init_is_the_prototype_formula(task):
    model = tiny_model(task)
    episode = tiny_episode(task)
    algo = build_algorithm("protomaml", model, {"params": "all", "train_dropout": False})
    assert "head.weight" in algo.inner_names and "head.weight" not in algo.outer_names
    n = episode.num_labels
    fast = algo.initial_fast_weights(episode.support, n, training=False)
    with torch.no_grad():
        fs, ys = labelled(model.embed(episode.support["input_ids"], episode.support["attention_mask"]),
                          episode.support["labels"])  # fmt: skip
        protos = torch.stack([fs[ys == k].mean(0) for k in range(n)])
        fq = model.embed(episode.query["input_ids"], episode.query["attention_mask"])
    assert fast["head.weight"].shape == (n, 16)  # exactly N rows, whatever max_ways is
    torch.testing.assert_close(fast["head.weight"], 2 * protos)
    torch.testing.assert_close(fast["head.bias"], -(protos**2).sum(-1))
    with torch.no_grad():
        logits = algo.forward_with(fast, episode.query, n)
    # Head logits + ‖f − c_n‖² is ‖f‖², the same for every class of an example.
    offset = logits + ((fq.unsqueeze(-2) - protos) ** 2).sum(-1)
    torch.testing.assert_close(offset, (fq**2).sum(-1, keepdim=True).expand_as(offset))

    # Any label order: permuting the episode labels permutes the head rows.
    perm = torch.tensor([2, 0, 1])
    relabelled = dict(episode.support)
    relabelled["labels"] = torch.where(
        episode.support["labels"] >= 0, perm[episode.support["labels"].clamp_min(0)], -100
    )
    permuted = algo.initial_fast_weights(relabelled, n, training=False)
    torch.testing.assert_close(permuted["head.weight"][perm], fast["head.weight"])


def test_protomaml_zero_steps_equals_protonet():
    """With no inner step Proto-MAML's loss is ProtoNet's (same softmax), so its meta-gradient,
    which then flows only through the prototype init, must equal ProtoNet's."""
    episode = tiny_episode("sequence")
    grads = {}
    for name in ("protonet", "protomaml"):
        model = tiny_model()
        algo = build_algorithm(
            name, model, {"params": "all", "inner_steps": 0, "train_dropout": False}
        )
        algo.meta_backward(episode)
        grads[name] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads["protonet"]) == set(grads["protomaml"])
    for n, g in grads["protonet"].items():
        torch.testing.assert_close(grads["protomaml"][n], g, rtol=1e-9, atol=1e-12)


def _directional_fd(algo, episode, direction, eps=1e-5) -> float:
    params = algo.meta_parameters()

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
        value = algo.meta_backward(episode)["query_loss"]
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
        return value

    value = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    zero_grads(algo.model)
    return value


def test_protomaml_second_order_gradient_matches_finite_differences():
    model = tiny_model()
    episode = tiny_episode("sequence")
    algo = build_algorithm(
        "protomaml", model,
        {"params": "all", "inner_steps": 2, "inner_lr": 0.3, "train_dropout": False},
    )  # fmt: skip
    algo.meta_backward(episode)
    grads = [p.grad.clone() for p in algo.meta_parameters()]
    zero_grads(model)
    gen = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=gen, dtype=f64) for p in algo.meta_parameters()]
    analytic = float(sum((g * d).sum() for g, d in zip(grads, direction, strict=True)))
    assert analytic == pytest.approx(_directional_fd(algo, episode, direction), rel=1e-6)


def test_protomaml_first_order_keeps_the_prototype_path():
    """fo-Proto-MAML = ∇_body L_Q(φ_k) + J_initᵀ ∇_head L_Q(φ_k), computed here by hand with
    plain autograd and ``functional_call`` on a copied model."""
    model = tiny_model()
    reference = copy.deepcopy(model)
    episode = tiny_episode("sequence")
    lr, steps, n = 0.3, 2, N_WAY
    algo = build_algorithm(
        "protomaml", model, {"params": "all", "inner_steps": steps, "inner_lr": lr,
                             "first_order": True, "train_dropout": False},
    )  # fmt: skip
    algo.meta_backward(episode)

    body = {k: p for k, p in reference.named_parameters() if not k.startswith("head.")}
    s, q = episode.support, episode.query
    fs = reference.embed(s["input_ids"], s["attention_mask"])
    protos = torch.stack([fs[s["labels"] == k].mean(0) for k in range(n)])
    head0 = {"head.weight": 2 * protos, "head.bias": -(protos**2).sum(-1)}

    def loss(weights: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = functional_call(reference, weights, (batch["input_ids"], batch["attention_mask"]))
        return F.cross_entropy(logits, batch["labels"])

    phi = {k: t.detach().clone().requires_grad_(True) for k, t in {**body, **head0}.items()}
    for _ in range(steps):
        g = torch.autograd.grad(loss(phi, s), list(phi.values()))
        phi = {
            k: (t - lr * gk).detach().requires_grad_(True)
            for (k, t), gk in zip(phi.items(), g, strict=True)
        }
    g_query = dict(zip(phi, torch.autograd.grad(loss(phi, q), list(phi.values())), strict=True))
    through_init = torch.autograd.grad(
        list(head0.values()), list(body.values()),
        grad_outputs=[g_query["head.weight"], g_query["head.bias"]],
    )  # fmt: skip
    got = dict(model.named_parameters())
    for (k, _), extra in zip(body.items(), through_init, strict=True):
        torch.testing.assert_close(got[k].grad, g_query[k] + extra, rtol=1e-9, atol=1e-12)
    assert got["head.weight"].grad is None  # the head is never meta-learned
    # The prototype path matters: without it the gradient would differ.
    assert max(float(t.abs().max()) for t in through_init) > 1e-3


# ---------------------------------------------------------------- iMAML


def test_imaml_meta_gradient_matches_closed_form_and_unrolled_proximal_maml():
    """Head-only inner problem: cross-entropy of a linear head + (λ/2)‖φ − θ‖² is strongly
    convex, so φ* is unique. References: (1) φ* by Newton's method with the dense Hessian and
    the implicit gradient by a dense solve of (I + H/λ) x = ∇L_Q(φ*); (2) second-order MAML on
    the same proximal problem, differentiating through every unrolled step (its limit is the
    implicit gradient). Body tensors, meta-learned but not adapted, get ∇L_Q(φ*) directly."""
    lam, lr, steps = 4.0, 0.15, 35  # rate ≈ L/(2λ + L) ≈ 0.4 per step for L ≈ 5.2
    model = tiny_model()
    reference = copy.deepcopy(model)
    episode = tiny_episode("sequence")
    algo = build_algorithm(
        "imaml", model,
        {"params": "head", "outer_params": "all", "inner_steps": steps, "inner_lr": lr,
         "lam": lam, "cg_steps": 40, "cg_tol": 1e-13, "train_dropout": False},
    )  # fmt: skip
    metrics = algo.meta_backward(episode)
    assert metrics["cg_residual"] < 1e-10 and metrics["cg_negative_curvature"] == 0.0

    s, q = episode.support, episode.query
    with torch.no_grad():
        fs = reference.embed(s["input_ids"], s["attention_mask"])
        fq = reference.embed(q["input_ids"], q["attention_mask"])
    theta = torch.cat([reference.head.weight.detach().flatten(), reference.head.bias.detach()])
    split = 4 * 16

    def head_loss(v: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = F.linear(feats, v[:split].reshape(4, 16), v[split:])[:, :N_WAY]
        return F.cross_entropy(logits, labels)

    def support_loss(v: torch.Tensor) -> torch.Tensor:
        return head_loss(v, fs, s["labels"])

    phi = theta.clone()
    eye = torch.eye(theta.numel(), dtype=f64)
    for _ in range(20):  # Newton on L_S(φ) + (λ/2)‖φ − θ‖²
        grad = torch.func.grad(support_loss)(phi) + lam * (phi - theta)
        phi = phi - torch.linalg.solve(torch.func.hessian(support_loss)(phi) + lam * eye, grad)
    g_query = torch.func.grad(lambda v: head_loss(v, fq, q["labels"]))(phi)
    implicit = torch.linalg.solve(eye + torch.func.hessian(support_loss)(phi) / lam, g_query)
    got = torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad])
    torch.testing.assert_close(got, implicit, rtol=1e-8, atol=1e-10)

    theta_var = theta.clone().requires_grad_(True)
    unrolled = theta_var
    for _ in range(60):
        objective = support_loss(unrolled) + 0.5 * lam * ((unrolled - theta_var) ** 2).sum()
        unrolled = unrolled - lr * torch.autograd.grad(objective, unrolled, create_graph=True)[0]
    (maml,) = torch.autograd.grad(head_loss(unrolled, fq, q["labels"]), theta_var)
    torch.testing.assert_close(got, maml, rtol=1e-8, atol=1e-10)
    assert not torch.allclose(got, g_query, rtol=1e-3)  # the correction is not negligible

    # Body: the ordinary query-loss gradient at φ* (plain autograd on the copied model).
    with torch.no_grad():
        reference.head.weight.copy_(phi[:split].reshape(4, 16))
        reference.head.bias.copy_(phi[split:])
    F.cross_entropy(
        reference(q["input_ids"], q["attention_mask"], n_way=N_WAY), q["labels"]
    ).backward()
    ref_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        if not name.startswith("head."):
            torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-7, atol=1e-10)


class SavedTensorPeak:
    """Peak bytes of autograd-saved tensors alive at once (a graph's memory, independent of the
    allocator): every saved tensor is counted while the graph that holds it lives."""

    def __init__(self) -> None:
        self.alive = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> object:
        size = tensor.numel() * tensor.element_size()
        self.alive += size
        self.peak = max(self.peak, self.alive)
        holder = _Holder(tensor)
        weakref.finalize(holder, self._release, size)
        return holder

    def _release(self, size: int) -> None:
        self.alive -= size

    @staticmethod
    def unpack(holder: object) -> torch.Tensor:
        return holder.tensor

    def measure(self, fn) -> int:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
            fn()
        return self.peak


class _Holder:
    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def test_imaml_memory_does_not_grow_with_inner_steps():
    episode = tiny_episode("sequence")

    def peak(name: str, steps: int, **extra) -> int:
        model = tiny_model()
        config = {"params": "all", "inner_steps": steps, "inner_lr": 0.05, "train_dropout": False}
        algo = build_algorithm(name, model, {**config, **extra})
        return SavedTensorPeak().measure(lambda: algo.meta_backward(episode))

    imaml_1, imaml_6 = peak("imaml", 1, cg_steps=2), peak("imaml", 6, cg_steps=2)
    maml_1, maml_3 = peak("maml", 1), peak("maml", 3)
    assert imaml_6 == imaml_1, (imaml_1, imaml_6)
    # The probe can see growth: second-order MAML keeps every step's graph.
    assert maml_3 > 2 * maml_1, (maml_1, maml_3)
    assert imaml_6 < maml_3


@pytest.mark.parametrize("name", ["protomaml", "imaml"])
def test_token_variants_run_on_a_tiny_ner_batch(name):
    """NER episodes: the head has num_labels = types + O rows; -100 positions are ignored."""
    model = tiny_model("token")
    episode = tiny_episode("token")
    extra = {"cg_steps": 2} if name == "imaml" else {}
    algo = build_algorithm(
        name, model, {"params": "all", "inner_steps": 2, "inner_lr": 0.1, **extra}
    )
    metrics = algo.meta_backward(episode)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values()), metrics
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in algo.meta_parameters())
    fast = algo.adapt(episode.support, episode.num_labels)
    assert all(t.grad_fn is None for t in fast.values())
    logits = algo.predict_logits(fast, episode.query, episode.num_labels)
    assert logits.shape == (*episode.query["input_ids"].shape, len(TAGS))


# ---------------------------------------------------------------- real MiniLM smoke runs


@pytest.fixture(scope="module")
def real_episodes(minilm, data_dir) -> dict[str, Episode]:
    """A 3-way 1-shot BBC News episode and a 2-type relaxed WNUT-16 NER episode."""
    common = {"seed": 0, "tokenizer": minilm.tokenizer, "max_length": 24}
    bbc = load_from_disk(str(data_dir / "bbc_news"))
    wnut = load_from_disk(str(data_dir / "wnut16"))
    return {
        "sequence": ClassificationSampler(bbc, n_way=3, k_shot=1, q_query=1, name="bbc_news", **common).episode(0),
        "token": NERSampler(wnut, n_way=2, k_shot=1, mode="relaxed", name="wnut16", **common).episode(0),
    }  # fmt: skip


SMOKE = [
    ("protonet", {}),
    # First order here (SDPA kept); second order is checked exactly on the tiny model.
    ("protomaml", {"inner_steps": 1, "inner_lr": 1e-2, "first_order": True}),
    ("imaml", {"inner_steps": 1, "inner_lr": 1e-2, "cg_steps": 2}),
]


@pytest.mark.parametrize("task", ["sequence", "token"], ids=["bbc", "wnut"])
@pytest.mark.parametrize(("name", "options"), SMOKE, ids=[s[0] for s in SMOKE])
def test_minilm_smoke(minilm, real_episodes, name, options, task):
    model = FewShotModel(minilm.model, task=task, max_ways=8)  # shares the loaded encoder
    episode = real_episodes[task]
    algo = build_algorithm(name, model, {"params": "top", "top_layers": 1, **options})
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    try:
        metrics = algo.meta_backward(episode)
        assert 0 < metrics["query_loss"] < 50 and 0 <= metrics["query_acc"] <= 1, metrics
        grads = {n: p.grad for n, p in model.named_parameters()}
        for n in algo.outer_names:
            assert grads[n] is not None and torch.isfinite(grads[n]).all(), n
        assert any(float(grads[n].abs().max()) > 0 for n in algo.outer_names)
        assert all(grads[n] is None for n in grads if ".layer.0." in n)  # frozen: no gradient
        for n, p in model.named_parameters():  # meta_backward only accumulates .grad
            if n in before:
                assert torch.equal(p.detach(), before[n]), n
        n_labels = episode.num_labels
        fast = algo.adapt(episode.support, n_labels)
        assert all(t.grad_fn is None for t in fast.values())
        logits = algo.predict_logits(fast, episode.query, n_labels)
        assert logits.shape == (*episode.query["labels"].shape, n_labels)
        assert torch.isfinite(logits).all()
    finally:
        zero_grads(model)
