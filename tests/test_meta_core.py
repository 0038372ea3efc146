"""FewShotModel, parameter selection, the registry, eval-mode adaptation, SDPA handling, and one
shared tester over every algorithm × parameter subset."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from peft import IA3Config, LoraConfig
from transformers import BertConfig, BertModel

import metanlp.meta.helpers as meta_helpers
from metanlp.episodes.types import Episode
from metanlp.meta import (
    PARAMETER_SETS,
    MetaAlgorithm,
    MetaConfig,
    build_algorithm,
    get_algorithm,
    list_algorithms,
    register_algorithm,
    select_parameters,
)
from metanlp.meta.maml import MAMLConfig
from metanlp.meta.metasgd import MetaSGDConfig
from metanlp.models import FewShotModel, get_attn_implementation, load_encoder

OURS = ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp")
SUBSETS = PARAMETER_SETS  # all, body, top, head, lora, adapter ((IA)^3)
TASKS = ("sequence", "token")
LORA = {"r": 2, "target_modules": ["query", "value"]}


pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_encoder(seed: int = 0, pooler: bool = False) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        vocab_size=50, attn_implementation="sdpa",
    )  # fmt: skip
    return BertModel(config, add_pooling_layer=pooler)


def tiny_model(task: str = "sequence", peft=None, **kwargs) -> FewShotModel:
    return FewShotModel(tiny_encoder(), task=task, max_ways=4, peft_config=peft, **kwargs)


def tiny_episode(task: str = "sequence", n_way: int = 3, seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)

    def part(n: int) -> dict[str, torch.Tensor]:
        ids = torch.randint(1, 50, (n, 6), generator=g)
        mask = torch.ones_like(ids)
        mask[-1, -2:] = 0
        if task == "token":
            labels = torch.randint(0, n_way, (n, 6), generator=g)
            labels[:, 0] = -100  # [CLS]-like position ignored, as the NER collator does
            labels[mask == 0] = -100
        else:
            labels = torch.arange(n) % n_way
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    support, query = part(2 * n_way), part(2 * n_way)
    kind = "ner" if task == "token" else "classification"
    return Episode(
        support=support, query=query, n_way=n_way, label_names=[f"c{i}" for i in range(n_way)],
        kind=kind, task="synthetic", support_inputs=[], query_inputs=[], support_targets=[],
        query_targets=[],
    )  # fmt: skip


def minilm_episode(tokenizer, n_way: int = 2) -> Episode:
    texts = [
        [
            "the match ended in a late goal",
            "the striker signed for a new club",
            "fans cheered the team",
        ],
        [
            "shares fell after the earnings call",
            "the bank raised interest rates",
            "markets rallied on trade news",
        ],
        ["the film won best picture", "the band released a new album", "critics praised the actor"],
    ][:n_way]

    def part(i: slice) -> dict[str, torch.Tensor]:
        rows = [(t, c) for c, group in enumerate(texts) for t in group[i]]
        enc = tokenizer(
            [t for t, _ in rows], padding=True, truncation=True, max_length=32, return_tensors="pt"
        )
        return {**enc, "labels": torch.tensor([c for _, c in rows])}

    return Episode(
        support=part(slice(0, 2)), query=part(slice(2, 3)), n_way=n_way,
        label_names=["sport", "business", "arts"][:n_way], kind="classification", task="handmade",
        support_inputs=[], query_inputs=[], support_targets=[], query_targets=[],
    )  # fmt: skip


# ---- FewShotModel -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "task,pooling", [("sequence", "cls"), ("sequence", "mean"), ("token", "cls")]
)
def test_fewshot_model_shapes_and_pooling(task, pooling):
    model = tiny_model(task, pooling=pooling).eval()
    ep = tiny_episode(task)
    logits = model(ep.support["input_ids"], ep.support["attention_mask"], n_way=3)
    assert logits.shape == ((6, 3) if task == "sequence" else (6, 6, 3))
    full = model(ep.support["input_ids"], ep.support["attention_mask"])
    torch.testing.assert_close(full[..., :3], logits)  # slicing = the first n_way head rows
    if task == "sequence" and pooling == "mean":
        hidden = model.encoder(
            **{k: ep.support[k] for k in ("input_ids", "attention_mask")}
        ).last_hidden_state
        m = ep.support["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(
            model.embed(ep.support["input_ids"], ep.support["attention_mask"]),
            (hidden * m).sum(1) / m.sum(1),
        )
    with pytest.raises(ValueError, match="max_ways >= 5"):
        model(ep.support["input_ids"], n_way=5)


def test_fewshot_model_rejects_bad_options():
    with pytest.raises(ValueError, match=r"pooling='max'.*'cls', 'mean'"):
        FewShotModel(tiny_encoder(), pooling="max")
    with pytest.raises(ValueError, match=r"task='span'"):
        FewShotModel(tiny_encoder(), task="span")
    with pytest.raises(ValueError, match=r"head_init='normal'"):
        FewShotModel(tiny_encoder(), head_init="normal")


# ---- parameter selection -------------------------------------------------------------------------
def test_parameter_subsets_select_the_right_names():
    model = tiny_model()
    names = [n for n, _ in model.named_parameters()]
    assert select_parameters(model, "all") == names
    vocab = [
        n for n, p in model.named_parameters() if p is model.encoder.get_input_embeddings().weight
    ]
    assert len(vocab) == 1 and "word_embeddings" in vocab[0]
    assert select_parameters(model, "body") == [n for n in names if n != vocab[0]]
    assert select_parameters(model, "head") == ["head.weight", "head.bias"]
    top = select_parameters(model, "top", top_layers=1)
    assert top[-2:] == ["head.weight", "head.bias"] and all(".layer.1." in n for n in top[:-2])
    assert len(top) > 2 and not any(".layer.0." in n or "embeddings" in n for n in top)
    with pytest.raises(ValueError, match=r"top_layers=3 must be an int in 1\.\.2"):
        select_parameters(model, "top", top_layers=3)
    with pytest.raises(
        ValueError, match=r"params='bogus'.*'all', 'body', 'top', 'head', 'lora', 'adapter'"
    ):
        select_parameters(model, "bogus")
    with pytest.raises(ValueError, match=r"needs an encoder wrapped with a PEFT LoraConfig"):
        select_parameters(model, "lora")
    with pytest.raises(ValueError, match=r"no bottleneck .*IA3Config"):
        select_parameters(model, "adapter")
    with pytest.raises(ValueError, match=r"Unknown parameter names \['nope'\]"):
        select_parameters(model, ["nope"])
    lora = tiny_model(peft=LoraConfig(**LORA))
    picked = select_parameters(lora, "lora")
    assert picked[-2:] == ["head.weight", "head.bias"] and all("lora_" in n for n in picked[:-2])
    assert len(picked) == 2 + 2 * 2 * 2  # 2 layers × (query, value) × (A, B)
    ia3 = tiny_model(peft=IA3Config(target_modules=["key", "value"], feedforward_modules=[]))
    adapters = select_parameters(ia3, "adapter")
    assert len(adapters) == 2 + 4 and all("ia3_" in n for n in adapters[:-2])
    with pytest.raises(ValueError, match="use params='lora'"):
        select_parameters(lora, "adapter")


def test_frozen_weights_are_never_copied():
    model = tiny_model(peft=LoraConfig(**LORA))
    algo = build_algorithm("maml", model, {"params": "lora", "inner_steps": 2, "inner_lr": 0.1})
    frozen = {n: p for n, p in model.named_parameters() if n not in algo.inner_names}
    assert frozen and not any(p.requires_grad for p in frozen.values())
    ptrs = {n: p.data_ptr() for n, p in model.named_parameters()}
    base_query = model.base_encoder.encoder.layer[0].attention.self.query.base_layer
    seen: list[int] = []
    hook = base_query.register_forward_pre_hook(
        lambda mod, args: seen.append(mod.weight.data_ptr())
    )
    ep = tiny_episode()
    algo.meta_backward(ep)
    fast = algo.adapt(ep.support, ep.n_way)
    hook.remove()
    assert list(fast) == algo.inner_names  # only the adapted tensors are in the dict
    assert seen and set(seen) == {
        ptrs[n] for n in ptrs if n.endswith("query.base_layer.weight") and ".layer.0." in n
    }
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == ptrs
    assert all(p.grad is None for p in frozen.values())


def test_unused_adapted_parameter_gives_a_clear_error():
    model = FewShotModel(tiny_encoder(pooler=True), max_ways=4)
    algo = build_algorithm("fomaml", model, {"params": "all", "inner_steps": 1})
    with pytest.raises(
        ValueError, match=r"does not depend on adapted parameters \['encoder\.pooler"
    ):
        algo.meta_backward(tiny_episode())


# ---- eval-mode adaptation --------------------------------------------------------------------------
def live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


@pytest.mark.parametrize("name", ["maml", "anil"])
def test_eval_adaptation_keeps_no_graph_and_no_memory(name):
    model = tiny_model()
    algo = build_algorithm(name, model, {"params": "all", "inner_steps": 2, "inner_lr": 0.1})
    model.train()  # adapt must still be deterministic (dropout off) and restore the flag
    counts = []
    for i in range(20):
        ep = tiny_episode(seed=i)
        fast = algo.adapt(ep.support, ep.n_way)
        logits = algo.predict_logits(fast, ep.query, ep.n_way)
        assert all(t.grad_fn is None and not t.requires_grad for t in fast.values())
        assert logits.grad_fn is None
        if i == 0:
            again = algo.adapt(ep.support, ep.n_way)
            assert all(torch.equal(fast[n], again[n]) for n in fast)
            refs = [weakref.ref(t) for t in fast.values()]
            del again
        del fast, logits
        if i in (1, 19):  # a gc scan is slow: compare the second episode with the last
            counts.append(live_tensors())
    assert all(r() is None for r in refs)  # nothing holds on to an old episode's fast weights
    assert counts[1] <= counts[0], counts
    assert model.training and all(p.grad is None for p in model.parameters())


def test_head_init_zero_lives_in_fast_weights_only():
    model = tiny_model(head_init="zero")
    algo = build_algorithm(
        "maml", model, {"params": "top", "top_layers": 1, "inner_steps": 1, "inner_lr": 0.1}
    )
    assert "head.weight" in algo.inner_names and "head.weight" not in algo.outer_names
    ep = tiny_episode()
    assert torch.count_nonzero(algo.adapt(ep.support, ep.n_way, steps=0)["head.weight"]) == 0
    algo.meta_backward(ep)
    assert model.head.weight.grad is None and all(
        p.grad is not None for p in algo.meta_parameters()
    )
    with pytest.raises(ValueError, match="head must adapt"):
        build_algorithm(
            "maml",
            tiny_model(head_init="zero"),
            {"params": ["encoder.embeddings.word_embeddings.weight"]},
        )


# ---- SDPA -> eager ---------------------------------------------------------------------------------
def test_second_order_switches_sdpa_to_eager_once_and_runs_on_minilm(minilm, caplog):
    meta_helpers._warned_eager = False
    first = FewShotModel(load_encoder().model, max_ways=4)
    build_algorithm("fomaml", first, {"params": "top", "top_layers": 1})
    assert get_attn_implementation(first.base_encoder) == "sdpa"  # first order keeps SDPA
    with caplog.at_level(logging.WARNING, logger="metanlp.meta.helpers"):
        model = FewShotModel(minilm.model, max_ways=4, tokenizer=minilm.tokenizer)
        algo = build_algorithm("maml", model, {"params": "all", "inner_steps": 1, "inner_lr": 1e-3})
        build_algorithm("maml", FewShotModel(tiny_encoder(), max_ways=4), {"params": "head"})
    assert get_attn_implementation(model.base_encoder) == "eager"
    assert sum("switched the encoder to eager" in r.getMessage() for r in caplog.records) == 1
    metrics = algo.meta_backward(minilm_episode(minilm.tokenizer))
    assert torch.isfinite(torch.tensor(metrics["query_loss"]))
    grads = [p.grad for p in algo.meta_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ---- registry and configs ---------------------------------------------------------------------------
def test_registry_lists_builds_and_checks_names():
    assert set(OURS) <= set(list_algorithms())
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("maml", MAMLConfig, get_algorithm("maml")[1])
    with pytest.raises(ValueError, match=r"Unknown algorithm 'mamal'; registered: \["):
        build_algorithm("mamal", tiny_model())
    with pytest.raises(TypeError, match="takes a MetaSGDConfig"):
        build_algorithm("metasgd", tiny_model(), MAMLConfig())
    with pytest.raises(TypeError, match="must subclass MetaAlgorithm"):
        register_algorithm("thing", MetaConfig, object)
    algo = build_algorithm("fomaml", tiny_model(), {"params": "head", "inner_steps": 2})
    assert (
        isinstance(algo, MetaAlgorithm) and algo.config.first_order and algo.config.inner_steps == 2
    )


BAD_CONFIGS = [
    ("maml", {"inner_steps": -1}, r"inner_steps=-1 must be an int >= 0"),
    ("maml", {"inner_lr": 0}, r"inner_lr=0 must be a number > 0"),
    (
        "maml",
        {"inner_optimizer": "rmsprop"},
        r"inner_optimizer='rmsprop'.*'sgd', 'momentum', 'adam'",
    ),
    (
        "metasgd",
        {"inner_optimizer": "adam"},
        r"inner_optimizer='adam' is not allowed here; use one of \('sgd',\)",
    ),
    ("mamlpp", {"msl_epochs": -2}, r"msl_epochs=-2 must be an int >= 0"),
    ("reptile", {"outer_params": "all"}, r"outer_params='all' must be None"),
    ("anil", {"outer_params": "head"}, r"outer_params='head' must be None"),
    ("maml", {"inner_stepz": 3}, r"no options \['inner_stepz'\]"),
]


@pytest.mark.parametrize(
    "name,options,message", BAD_CONFIGS, ids=[f"{n}-{next(iter(o))}" for n, o, _ in BAD_CONFIGS]
)
def test_bad_configs_name_the_value_and_the_choices(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_algorithm(name, tiny_model(), options)


def test_learned_rates_state_dict_round_trip():
    algo = build_algorithm("metasgd", tiny_model(), MetaSGDConfig(params="head", inner_lr=0.1))
    state = algo.state_dict()
    assert sorted(state) == ["inner_lr.head.bias", "inner_lr.head.weight"]
    other = build_algorithm("metasgd", tiny_model(), MetaSGDConfig(params="head", inner_lr=0.5))
    other.load_state_dict(state)
    assert torch.equal(other.extra["inner_lr.head.weight"], state["inner_lr.head.weight"])
    extras = list(other.extra.values())
    other.to("cpu")  # moves in place: an optimiser built on meta_parameters() stays valid
    assert all(a is b for a, b in zip(extras, other.extra.values(), strict=True))
    with pytest.raises(ValueError, match="was it saved by the same algorithm"):
        build_algorithm("metasgd", tiny_model(), {"params": "top"}).load_state_dict(state)


# ---- one shared tester over every registered algorithm × parameter subset × task ------------------
# The matrix is list_algorithms() × SUBSETS × TASKS: a newly registered algorithm is tested (and
# must either run or refuse clearly, below) without anyone editing a list.
REFUSED = {
    # ProtoNet and Proto-MAML take their head from prototypes: a head-only meta-learned set is empty.
    ("protonet", "head", "sequence"): "selects only the head",
    ("protonet", "head", "token"): "selects only the head",
    ("protomaml", "head", "sequence"): "head",
    ("protomaml", "head", "token"): "head",
    # Span detection + typing: NER models only, and encoder tensors to meta-learn.
    **{("decomposed", s, "sequence"): "needs a token model" for s in SUBSETS},
    ("decomposed", "head", "token"): "encoder tensors to meta-learn",
}
"""(algorithm, subset, task) cases that must be refused with a ValueError naming the reason."""
TOKEN_ONLY = {"decomposed"}
CASES = (
    [(a, s, t, {}) for a in list_algorithms() for s in SUBSETS for t in TASKS]
    + [(a, "top", "sequence", {"head_init": "zero"}) for a in OURS]
    + [
        (a, "top", "sequence", {"inner_optimizer": o})
        for a in ("maml", "fomaml", "reptile", "anil")
        for o in ("momentum", "adam")
    ]
    + [
        ("maml", "lora", "sequence", {"outer_params": "all"}),
        ("fomaml", "all", "sequence", {"outer_params": "lora"}),
    ]
)


def case_id(case) -> str:
    name, subset, task, extra = case
    return "-".join([name, subset, task, *(f"{k}={v}" for k, v in extra.items())])


@pytest.mark.parametrize("name,subset,task,extra", CASES, ids=[case_id(c) for c in CASES])
def test_every_algorithm_runs_on_every_subset(name, subset, task, extra):
    extra = dict(extra)
    lora = subset == "lora" or "lora" in extra.values()
    peft = LoraConfig(**LORA) if lora else IA3Config() if subset == "adapter" else None
    model = tiny_model(task, peft=peft, head_init=extra.pop("head_init", "random"))
    options = {"params": subset, "top_layers": 1, "inner_steps": 2, "inner_lr": 0.1, **extra}
    if name == "protonet":  # no inner loop
        options.pop("inner_lr")
        options["inner_steps"] = 0
    if (name, subset, task) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[name, subset, task]):
            build_algorithm(name, model, options)
        return
    algo = build_algorithm(name, model, options)
    ep = tiny_episode(task)
    metrics = algo.meta_backward(ep, scale=0.5)
    # query_loss / query_acc are the trainer's contract; the MAML family reports the support loss.
    expected = {"query_loss", "query_acc"} | ({"support_loss"} if name in OURS else set())
    assert expected <= set(metrics)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k != "query_acc")
    meta = dict(algo.named_meta_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in meta.values()), [
        n for n, p in meta.items() if p.grad is None
    ]
    assert any(p.grad.abs().sum() > 0 for p in meta.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(algo.inner_names) | set(algo.outer_names)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    n = ep.num_labels
    fast = algo.adapt(ep.support, n, steps=None if name == "protonet" else 1)
    if name == "protonet":  # no inner loop: adaptation is the class prototypes
        assert list(fast) == ["prototypes"] and fast["prototypes"].shape[0] == n
    elif name not in TOKEN_ONLY:  # (the decomposed learner adapts its two heads)
        assert list(fast) == algo.inner_names
    logits = algo.predict_logits(fast, ep.query, n)
    assert logits.shape[-1] == n and logits.shape[0] == ep.query["input_ids"].shape[0]


@pytest.mark.parametrize(
    "name,subset",
    [("fomaml", "lora"), ("anil", "top"), ("reptile", "top")],
    ids=["fomaml-lora", "anil-top", "reptile-top"],
)
def test_minilm_smoke(minilm, name, subset):
    peft = LoraConfig(r=4, target_modules=["query", "value"]) if subset == "lora" else None
    model = FewShotModel(load_encoder().model, max_ways=4, peft_config=peft)
    algo = build_algorithm(
        name, model, {"params": subset, "top_layers": 1, "inner_steps": 2, "inner_lr": 1e-2}
    )
    ep = minilm_episode(minilm.tokenizer, n_way=3)
    metrics = algo.meta_backward(ep)
    assert 0 < metrics["query_loss"] < 10
    assert all(p.grad is not None for p in algo.meta_parameters())
    fast = algo.adapt(ep.support, ep.n_way)
    assert algo.predict_logits(fast, ep.query, ep.n_way).shape == (3, 3)
