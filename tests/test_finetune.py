"""Test-time fine-tuning after adaptation (`metanlp.meta.finetune`) with the real MiniLM.

The reference is plain PyTorch on a copied model: load the adapted fast weights into the copy,
put the same head on it and run `torch.optim.AdamW` on the support loss; the learner's
functional fine-tuning must give the same query logits. Also: ProtoNet's prototypes become an
equivalent linear head, the learner itself never changes, the setting survives save/load, and
bad settings get clear errors.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from text_examples import LABELS, QUERY, TEXTS
from torch import nn

from metanlp.api import MetaLearner
from metanlp.inputs import encode_texts
from metanlp.meta.finetune import FineTuneConfig
from metanlp.models import model_inputs


@pytest.fixture(scope="module")
def learner():
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(max_length=32)  # Proto-MAML, top layer + head


def _batch(learner, texts, labels=None):
    batch = encode_texts(learner.tokenizer, texts, learner.config.max_length)
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
    return model_inputs(batch, learner.device) | (
        {"labels": batch["labels"]} if labels is not None else {}
    )


def _reference_logits(learner, start, config, support, query, n_way):
    """AdamW on a deep copy whose tensors are set to the adapted state ``start``."""
    model = copy.deepcopy(learner.model).eval()
    model.head = nn.Linear(model.hidden_size, start["head.weight"].shape[0])
    own = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in start.items():
            own[name].copy_(value if config.head_start == "adapted" or "head" not in name else 0)
    for n, p in model.named_parameters():  # "body": the token embeddings stay as they are
        p.requires_grad_(config.params == "all" or "word_embeddings" not in n)
    head = list(model.head.parameters())
    body = [p for n, p in model.named_parameters() if not n.startswith("head.") and p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    for _ in range(config.steps):
        logits = model(**{k: v for k, v in support.items() if k != "labels"}, n_way=n_way)
        loss = nn.functional.cross_entropy(logits, support["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return model(**query, n_way=n_way)


@pytest.mark.parametrize(
    "head_start, params", [("zero", "all"), ("adapted", "all"), ("zero", "body")]
)
def test_finetune_matches_adamw_on_a_copied_model(learner, head_start, params):
    """metanlp's fused AdamW over fast weights against the per-tensor AdamW on a copy."""
    torch.manual_seed(0)
    config = FineTuneConfig(
        steps=3, lr=1e-4, head_lr=1e-2, weight_decay=0.01, head_start=head_start, params=params
    )
    label_ids = [0, 0, 1, 1, 2, 2]
    support, query = _batch(learner, TEXTS, label_ids), _batch(learner, QUERY)
    start = learner.algorithm.adapt(support, 3, steps=2)  # the inner loop, then fine-tuning
    expected = _reference_logits(learner, start, config, support, query, 3)

    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    clf = learner.adapt(TEXTS, LABELS, steps=2, finetune=config)
    got = clf.logits(QUERY)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    plain = learner.adapt(TEXTS, LABELS, steps=2).logits(QUERY)
    assert (got - plain).abs().max() > 1e-3  # fine-tuning moved them (float noise: ~1e-5)
    after = learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the learner is untouched


def test_protonet_prototypes_become_an_equivalent_head():
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        algorithm="protonet", adapt="top", algorithm_config={}, max_length=32
    )

    def log_probs(clf):  # the two logit forms differ by a per-example constant
        return torch.log_softmax(clf.logits(QUERY).double(), -1)

    plain = log_probs(learner.adapt(TEXTS, LABELS, policy=False))
    no_move = {"steps": 1, "lr": 0.0, "head_lr": 0.0, "head_start": "adapted"}
    frozen = learner.adapt(TEXTS, LABELS, finetune=no_move)
    torch.testing.assert_close(log_probs(frozen), plain, rtol=1e-4, atol=1e-3)
    # Each class mixes two topics, so the support loss is far from 0 and AdamW moves things
    # (on well separated classes its gradients fall below AdamW's eps).
    mixed = ["business", "sport", "tech", "business", "sport", "tech"]
    untuned = log_probs(learner.adapt(TEXTS, mixed))
    assert (log_probs(learner.adapt(TEXTS, mixed, finetune=2)) - untuned).abs().max() > 1e-3


def test_ner_finetune_predicts_valid_tags():
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(task="token", max_length=32)
    words = [["Ann", "met", "Bob", "in", "Paris"], ["Google", "opened", "in", "Berlin"]]
    tags = [["person", "O", "person", "O", "loc"], ["org", "O", "O", "loc"]]
    tagger = learner.adapt(words, tags, steps=1, finetune=2)
    out = tagger.predict([["Carl", "visited", "Rome"]])
    assert len(out[0]) == 3 and set(out[0]) <= {"O", "person", "loc", "org"}


def test_learner_default_survives_save_and_load(learner, tmp_path):
    tuned = MetaLearner(learner.algorithm, learner.config)
    tuned.config = type(learner.config)(**{**vars(learner.config), "finetune": {"steps": 2}})
    assert tuned.finetune == FineTuneConfig(steps=2)
    folder = tuned.save_pretrained(tmp_path / "learner")
    loaded = MetaLearner.from_pretrained(folder)
    assert loaded.finetune == FineTuneConfig(steps=2)
    by_default = loaded.adapt(TEXTS, LABELS).predict_proba(QUERY)
    explicit = learner.adapt(TEXTS, LABELS, finetune=2).predict_proba(QUERY)
    np.testing.assert_allclose(by_default, explicit, rtol=1e-5, atol=1e-6)
    off = loaded.adapt(TEXTS, LABELS, finetune=False).predict_proba(QUERY)
    plain = learner.adapt(TEXTS, LABELS, policy=False).predict_proba(QUERY)
    np.testing.assert_allclose(off, plain, atol=1e-6)
    assert MetaLearner.from_pretrained(folder, finetune=None).finetune is None
    with pytest.raises(ValueError, match=r"\['adapt'\] cannot be overridden"):
        MetaLearner.from_pretrained(folder, finetune=3, adapt="all")


@pytest.mark.parametrize(
    "value,error,match",
    [
        (0, ValueError, r"steps=0 must be an int >= 1"),
        ({"steps": 2, "lr": -1.0}, ValueError, r"lr=-1.0 must be a number >= 0"),
        ({"params": "everything"}, ValueError, r"params='everything' is not allowed"),
        ({"stpes": 3}, ValueError, r"unknown field\(s\) \['stpes'\]"),
        ({"head_start": "random"}, ValueError, r"head_start='random' is not allowed"),
        ("10", TypeError, "expected None, a bool, a step count"),
    ],
    ids=["zero-steps", "negative-lr", "bad-params", "typo", "head-start", "string"],
)
def test_bad_finetune_settings(learner, value, error, match):
    with pytest.raises(error, match=match):
        learner.adapt(TEXTS, LABELS, finetune=value)


def test_coerce_forms():
    assert FineTuneConfig.coerce(None) is None and FineTuneConfig.coerce(False) is None
    assert FineTuneConfig.coerce(True) == FineTuneConfig()
    assert FineTuneConfig.coerce(7) == FineTuneConfig(steps=7)
    assert FineTuneConfig.coerce({"params": "top"}) == FineTuneConfig(params="top")
