"""Any Hugging Face encoder: tiny random models of each supported architecture, saved to a folder
with the MiniLM tokenizer, go through from_pretrained -> adapt -> predict for every parameter
set and one meta-training step (layers found from the model, LoRA targets from PEFT, eager
attention where SDPA is unsupported)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from text_examples import LABELS, QUERY, TEXTS
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    ModernBertConfig,
    ModernBertModel,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from metanlp.api import MetaLearner
from metanlp.meta.registry import algorithm_from_spec
from metanlp.models import default_model_path

SIZE = {"vocab_size": 30522, "hidden_size": 32, "num_attention_heads": 2,
        "intermediate_size": 48, "num_hidden_layers": 2}  # fmt: skip
BERT_LIKE = {**SIZE, "max_position_embeddings": 160, "pad_token_id": 0}

DISTILBERT = {"vocab_size": 30522, "dim": 32, "n_heads": 2, "hidden_dim": 48, "n_layers": 2,
              "max_position_embeddings": 160, "pad_token_id": 0}  # fmt: skip
MODERNBERT = {**SIZE, "max_position_embeddings": 160, "pad_token_id": 0,
              "global_attn_every_n_layers": 1, "local_attention": 16}  # fmt: skip

# (id, config, model class, where its blocks live)
ENCODERS = [
    ("bert", BertConfig(**BERT_LIKE), BertModel, "encoder.layer"),
    ("roberta", RobertaConfig(**BERT_LIKE), RobertaModel, "encoder.layer"),
    ("xlm-roberta", XLMRobertaConfig(**BERT_LIKE), XLMRobertaModel, "encoder.layer"),
    ("electra", ElectraConfig(**BERT_LIKE, embedding_size=16), ElectraModel, "encoder.layer"),
    ("distilbert", DistilBertConfig(**DISTILBERT), DistilBertModel, "transformer.layer"),
    ("deberta-v2", DebertaV2Config(**BERT_LIKE), DebertaV2Model, "encoder.layer"),
    ("modernbert", ModernBertConfig(**MODERNBERT), ModernBertModel, "layers"),
]
PARAMS = ["all", "top", "head", "lora"]


@pytest.fixture(scope="module", params=ENCODERS, ids=[e[0] for e in ENCODERS])
def encoder_folder(request, tmp_path_factory, single_thread):
    """A tiny random encoder of one architecture and the MiniLM tokenizer, in a folder."""
    name, config, model_cls, blocks = request.param
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp(name)
    model_cls(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    return folder, blocks


@pytest.mark.parametrize("params", PARAMS)
def test_adapt_and_predict(encoder_folder, params):
    folder, _ = encoder_folder
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        folder, adapt=params, algorithm="maml", max_length=32, device="cpu",
        algorithm_config={"inner_steps": 2, "inner_lr": 1e-2, "first_order": True},
    )  # fmt: skip
    clf = learner.adapt(TEXTS, LABELS, policy=False)  # the algorithm's own adaptation
    assert set(clf.predict(QUERY)) <= set(LABELS)
    assert clf.predict_proba(QUERY).shape == (2, 3)
    fast = set(clf.fast)
    if params == "lora":
        assert any("lora_" in n for n in fast)
    if params == "top":  # exactly the last block and the head
        model = learner.model
        last = model.num_layers - 1
        body = {n for n in fast if not n.startswith("head.")}
        assert body and all(model.layer_of(n) == last for n in body)


def test_layer_stack_found_from_the_model(encoder_folder):
    folder, blocks = encoder_folder
    learner = MetaLearner.from_pretrained(folder, adapt="head", algorithm="maml", device="cpu")
    model = learner.model
    assert model.num_layers == 2
    assert model.layer_stack_name == f"encoder.{blocks}"
    assert {model.layer_of(f"encoder.{blocks}.{i}.x.weight") for i in (0, 1)} == {0, 1}


def test_meta_training_step(encoder_folder):
    """A second-order MAML meta-gradient on LoRA reaches the LoRA tensors and the head (eager
    attention is switched on for the double backward wherever SDPA was chosen)."""
    from test_meta_core import minilm_episode

    folder, _ = encoder_folder
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        folder, adapt="lora", algorithm="maml", device="cpu",
        algorithm_config={"inner_steps": 1, "inner_lr": 1e-2, "first_order": False},
    )  # fmt: skip
    algo = algorithm_from_spec(learner.config, learner.model)
    metrics = algo.meta_backward(minilm_episode(learner.tokenizer, n_way=2))
    assert metrics["query_loss"] > 0
    grads = {n: p.grad for n, p in algo.model.named_parameters() if p.grad is not None}
    assert any("lora_" in n for n in grads) and "head.weight" in grads
    assert all(bool(torch.isfinite(g).all()) and g.abs().sum() > 0 for g in grads.values())


def test_load_failure_is_not_reported_as_a_corrupt_file(tmp_path):
    """A config Transformers cannot build is not a damaged file; a truncated weight file is,
    and the error names it."""
    from metanlp.files import CorruptFileError
    from metanlp.models import EncoderLoadError, load_encoder

    folder = tmp_path / "bert"
    BertModel(BertConfig(**BERT_LIKE)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    config = folder / "config.json"
    good = config.read_text()
    config.write_text(good.replace('"num_attention_heads": 2', '"num_attention_heads": 3'))
    with pytest.raises(EncoderLoadError, match="not at fault") as info:
        load_encoder(folder)
    assert not isinstance(info.value, CorruptFileError)
    config.write_text(good)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match="truncated or corrupt") as info:
        load_encoder(folder)
    assert str(weights) in str(info.value)


def test_options_for_bert_family_blocks_say_so(tmp_path):
    """vmap task batching runs BERT-family blocks one by one: elsewhere it is a clear error,
    while the frozen-prefix cache is simply skipped (same predictions)."""
    from test_meta_core import minilm_episode

    folder = tmp_path / "distilbert"
    DistilBertModel(DistilBertConfig(**DISTILBERT)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    options = {"inner_steps": 1, "inner_lr": 1e-2, "first_order": True}
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        folder, adapt="top", algorithm="maml", device="cpu",
        algorithm_config={**options, "task_batching": "vmap"},
    )  # fmt: skip
    episode = minilm_episode(learner.tokenizer, n_way=2)
    with pytest.raises(ValueError, match="not a BERT-family encoder.*task_batching='loop'"):
        learner.algorithm.meta_backward_batch([episode, episode])
    torch.manual_seed(0)
    cached = MetaLearner.from_pretrained(
        folder, adapt="top", algorithm="maml", device="cpu",
        algorithm_config={**options, "frozen_prefix_cache": "on"},
    )  # fmt: skip
    expected = learner.adapt(TEXTS, LABELS, policy=False).predict_proba(QUERY)
    assert np.allclose(
        cached.adapt(TEXTS, LABELS, policy=False).predict_proba(QUERY), expected, atol=1e-6
    )


def test_frozen_prefix_cache_is_exact_or_off(encoder_folder):
    """BERT-family blocks run one by one (embeddings, ELECTRA's projection, layers) give the
    model's own logits; other encoders never use the cache."""
    from metanlp.inputs import encode_texts
    from metanlp.meta.efficient import (
        cache_frozen_prefix,
        frozen_prefix_layer,
        layered_forward,
        runs_layered,
    )

    folder, _ = encoder_folder
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        folder, adapt="top", algorithm="maml", device="cpu",
        algorithm_config={"inner_steps": 1, "inner_lr": 1e-2, "first_order": True},
    )  # fmt: skip
    model, algo = learner.model.eval(), learner.algorithm
    first = frozen_prefix_layer(model, algo.inner_names)
    if not runs_layered(model):
        assert first == 0
        return
    assert first == 1  # top_layers=1 of 2
    batch = encode_texts(learner.tokenizer, QUERY, 32)
    fast = {n: p.detach() + 0.01 for n, p in model.named_parameters() if n in algo.inner_names}
    with torch.no_grad():
        plain = algo.forward_with(fast, batch, 3)
        assert torch.allclose(layered_forward(model, fast, batch, 3), plain, atol=1e-5)
        cached = cache_frozen_prefix(model, batch, first)
        assert torch.allclose(algo.forward_with(fast, cached, 3), plain, atol=1e-5)
