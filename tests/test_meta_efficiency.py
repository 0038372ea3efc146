"""The efficiency options give the plain path's meta-gradient exactly (float64 tiny BERT), and
the frozen-prefix cache / layer checkpointing behave on the real MiniLM."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from torch.func import functional_call
from transformers import BertConfig, BertModel

from metanlp.episodes.types import Episode
from metanlp.meta import build_algorithm
from metanlp.meta.base import MetaConfig, task_loss
from metanlp.meta.efficient import checkpointed_layers, frozen_prefix_layer
from metanlp.models import FewShotModel

LORA = {"r": 2, "target_modules": ["query", "value"], "lora_dropout": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread start-up dominates on shared cores
    yield
    torch.set_num_threads(threads)


def tiny_model(peft: dict | None = None, layers: int = 3, **kwargs) -> FewShotModel:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        vocab_size=50, attn_implementation="eager", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    encoder = BertModel(config, add_pooling_layer=False).double()
    model = FewShotModel(
        encoder, max_ways=4, peft_config=LoraConfig(**peft) if peft else None, **kwargs
    )
    with torch.no_grad():  # LoRA B starts at 0: make the LoRA path carry signal
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


def tiny_episode(seed: int, n_way: int = 3, length: int = 7) -> Episode:
    g = torch.Generator().manual_seed(seed)

    def part() -> dict[str, torch.Tensor]:
        ids = torch.randint(1, 50, (2 * n_way, length), generator=g)
        mask = torch.ones_like(ids)
        mask[-2:, -3:] = 0  # padding must be honoured by every path
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(2 * n_way) % n_way}

    return Episode(
        support=part(), query=part(), n_way=n_way, label_names=[str(i) for i in range(n_way)],
        kind="classification", task="synthetic", support_inputs=[], query_inputs=[],
        support_targets=[], query_targets=[],
    )  # fmt: skip


def meta_grad(algo_name: str, model_kwargs: dict, config: dict, episodes, batch: bool = False):
    model = tiny_model(**model_kwargs)
    algo = build_algorithm(algo_name, model, {"inner_lr": 0.5, "inner_steps": 2, **config})
    if batch:
        metrics = algo.meta_backward_batch(episodes, scale=0.5)
    else:
        metrics = [algo.meta_backward(e, scale=0.5) for e in episodes]
    grads = {n: p.grad.clone() for n, p in algo.named_meta_parameters() if p.grad is not None}
    assert grads, "no meta-gradient reached the meta-parameters"
    return grads, metrics


def assert_same(a: dict, b: dict, tol: float = 1e-10) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=tol, rtol=0), (n, (a[n] - b[n]).abs().max())


SETTINGS = [
    ("maml-lora", "maml", {"peft": LORA}, {"params": "lora"}),
    ("fomaml-lora", "fomaml", {"peft": LORA}, {"params": "lora"}),
    ("maml-top1-mean", "maml", {"pooling": "mean"}, {"params": "top", "top_layers": 1}),
    ("metasgd-top2", "metasgd", {}, {"params": "top", "top_layers": 2}),
    ("maml-all", "maml", {}, {"params": "all"}),
]
OPTIONS = [
    ("ckpt-layers", {"checkpointing": "layers"}),
    ("ckpt-steps", {"checkpointing": "steps"}),
    ("prefix-on", {"frozen_prefix_cache": "on"}),
    ("vmap", {"task_batching": "vmap"}),
]


@pytest.mark.parametrize("option", [o for _, o in OPTIONS], ids=[i for i, _ in OPTIONS])
@pytest.mark.parametrize(
    "algo,model_kwargs,config", [s[1:] for s in SETTINGS], ids=[s[0] for s in SETTINGS]
)
def test_option_gives_plain_meta_gradient(algo, model_kwargs, config, option):
    episodes = [tiny_episode(1), tiny_episode(2, length=5)]
    plain, plain_metrics = meta_grad(
        algo, model_kwargs, {**config, "frozen_prefix_cache": "off"}, episodes
    )
    fast, metrics = meta_grad(
        algo, model_kwargs, {**config, **option}, episodes, batch="task_batching" in option
    )
    assert_same(plain, fast)
    for a, b in zip(plain_metrics, metrics, strict=True):
        assert a["query_loss"] == pytest.approx(b["query_loss"], abs=1e-10)
        assert a["support_loss"] == pytest.approx(b["support_loss"], abs=1e-10)


def test_second_order_differs_from_first_order_here():
    # Guards the table above against a setting where the two orders coincide (then a broken
    # checkpoint that dropped second-order terms could still pass).
    episodes = [tiny_episode(1)]
    second, _ = meta_grad("maml", {"peft": LORA}, {"params": "lora"}, episodes)
    first, _ = meta_grad("fomaml", {"peft": LORA}, {"params": "lora"}, episodes)
    assert max((second[n] - first[n]).abs().max() for n in second) > 1e-6


def test_prefix_cache_auto_only_when_exact():
    model = tiny_model()
    algo = build_algorithm("maml", model, {"params": "top", "top_layers": 1, "inner_steps": 1})
    assert frozen_prefix_layer(model, [*algo.inner_names, *algo.outer_names]) == 2
    lora = build_algorithm("maml", tiny_model(peft=LORA), {"params": "lora", "inner_steps": 1})
    assert frozen_prefix_layer(lora.model, lora.inner_names) == 0  # LoRA in layer 0: no prefix
    anil_like = build_algorithm(
        "maml", tiny_model(), {"params": "head", "outer_params": "all", "inner_steps": 1}
    )
    names = [*anil_like.inner_names, *anil_like.outer_names]
    assert frozen_prefix_layer(anil_like.model, names) == 0  # the body is meta-learned


def test_transformers_checkpointing_is_wrong_under_functional_call_ours_is_right():
    model = tiny_model(peft=LORA)
    ep = tiny_episode(3)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    theta = dict((n, p) for n, p in model.named_parameters() if n in names)

    def meta_gradient():
        fast = dict(theta)
        for _ in range(2):
            logits = functional_call(model, fast, (), {**ep.support, "n_way": 3}, strict=False)
            loss = task_loss(logits, ep.support["labels"])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
            fast = {n: w - 0.5 * g for (n, w), g in zip(fast.items(), grads, strict=True)}
        logits = functional_call(model, fast, (), {**ep.query, "n_way": 3}, strict=False)
        return torch.autograd.grad(task_loss(logits, ep.query["labels"]), list(theta.values()))

    model.train()
    reference = meta_gradient()
    with checkpointed_layers(model):
        ours = meta_gradient()
    assert max((a - b).abs().max() for a, b in zip(reference, ours, strict=True)) < 1e-12
    model.base_encoder.gradient_checkpointing_enable({"use_reentrant": False})
    theirs = meta_gradient()  # recomputes each layer with θ instead of the fast weights
    assert max((a - b).abs().max() for a, b in zip(reference, theirs, strict=True)) > 1e-8


def test_options_are_validated():
    with pytest.raises(ValueError, match=r"checkpointing='yes'.*'none', 'layers', 'steps'"):
        MetaConfig(checkpointing="yes")
    with pytest.raises(ValueError, match=r"task_batching='pmap'"):
        MetaConfig(task_batching="pmap")
    algo = build_algorithm(
        "maml", tiny_model(), {"params": "top", "checkpointing": "steps", "inner_optimizer": "adam"}
    )
    with pytest.raises(ValueError, match="supports the 'sgd' inner optimizer"):
        algo.meta_backward(tiny_episode(1))
    mamlpp = build_algorithm("mamlpp", tiny_model(), {"params": "top", "task_batching": "vmap"})
    with pytest.raises(ValueError, match="task_batching='loop'"):
        mamlpp.meta_backward_batch([tiny_episode(1), tiny_episode(2)])
    vm = build_algorithm("maml", tiny_model(), {"params": "top", "task_batching": "vmap"})
    with pytest.raises(ValueError, match=r"one n_way per meta-batch, got \[2, 3\]"):
        vm.meta_backward_batch([tiny_episode(1), tiny_episode(2, n_way=2)])


def test_minilm_top2_prefix_cache_matches_plain(minilm_eager):
    tok = minilm_eager.tokenizer
    texts = ["the match ended late", "shares fell sharply", "rain is expected", "a new phone"]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = torch.tensor([0, 1, 0, 1])
    part = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": labels,
    }
    ep = Episode(
        support=part, query=part, n_way=2, label_names=["a", "b"], kind="classification",
        task="t", support_inputs=[], query_inputs=[], support_targets=[], query_targets=[],
    )  # fmt: skip
    model = FewShotModel(minilm_eager.model, max_ways=2)
    calls = []
    hook = model.base_encoder.encoder.layer[0].register_forward_pre_hook(lambda *_: calls.append(1))
    grads, counts = [], []
    for setting in ("off", "on"):
        calls.clear()
        model.zero_grad(set_to_none=True)
        algo = build_algorithm(
            "maml", model,
            {"params": "top", "top_layers": 2, "inner_steps": 2, "inner_lr": 1e-2,
             "train_dropout": False, "frozen_prefix_cache": setting},
        )  # fmt: skip
        algo.meta_backward(ep)
        grads.append({n: p.grad.clone() for n, p in algo.named_meta_parameters()})
        counts.append(len(calls))
    hook.remove()
    assert counts == [3, 2]  # 2 support passes + 1 query pass, vs once per set with the cache
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-4), n
