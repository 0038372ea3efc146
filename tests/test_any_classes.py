"""Any number of classes (issue 27 item 2), with the real MiniLM: every learner adapts to 2, 17,
77 or 150 classes whatever its head's ``max_ways``, with a head of exactly the task's rows, and
a learner saved in the earlier layout (a ``max_ways``-row head, a policy without the new fields)
keeps loading and adapting beyond its ``max_ways``."""

from __future__ import annotations

import json

import pytest
import torch

from metanlp.api import MetaLearner
from metanlp.models import load_encoder, task_rows
from metanlp.serialization import CONFIG_NAME, HEAD_NAME


@pytest.fixture(scope="module")
def words():
    """150 distinct English words from MiniLM's own vocabulary (one topic word per class)."""
    vocab = load_encoder().tokenizer.vocab
    ordered = [w for w, _ in sorted(vocab.items(), key=lambda item: item[1])]
    picked = [w for w in ordered if w.isalpha() and w.isascii() and len(w) >= 6][1000::37]
    assert len(picked) >= 150
    return picked[:150]


def _task(words, n, shots):
    forms = ["{}", "all about {}", "news on {}"]
    texts = [forms[s].format(w) for w in words[:n] for s in range(shots)]
    labels = [w for w in words[:n] for _ in range(shots)]
    query = [f"something on {w}" for w in words[:n]]
    return texts, labels, query


def _accuracy(clf, query, words, n):
    return sum(p == w for p, w in zip(clf.predict(query), words[:n], strict=True)) / n


def test_task_rows_tiles_in_order():
    head = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(task_rows(head, 2), head[:2])
    assert torch.equal(task_rows(head, 3), head)
    assert task_rows(head, 7)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]


@pytest.mark.parametrize("n, shots", [(2, 2), (17, 2), (77, 1), (150, 1)], ids=str)
def test_default_learner_adapts_to_any_number_of_classes(words, n, shots):
    """``from_pretrained()`` (max_ways=16, the policy on) on 2 to 150 classes."""
    learner = MetaLearner.from_pretrained(max_length=16)
    assert learner.model.max_ways == 16
    texts, labels, query = _task(words, n, shots)
    clf = learner.adapt(texts, labels)
    assert clf.classes_ == words[:n]
    assert clf.predict_proba(query).shape == (n, n)
    rows = {
        k: v.shape[0] for k, v in clf.fast.items() if k.endswith(("head.weight", "probe.weight"))
    }
    assert list(rows.values()) == [n], rows  # one head, of exactly n rows
    # A query naming its class's word: far above chance (1/n) for every size.
    assert _accuracy(clf, query, words, n) >= 0.6, clf.decision.summary()


ALGORITHMS = {
    "maml-zero-head": {"algorithm": "maml", "adapt": "top", "head_init": "zero"},
    "maml-learned-head": {"algorithm": "fomaml", "adapt": "top"},
    "metasgd": {"algorithm": "metasgd", "adapt": "head"},
    "anil": {"algorithm": "anil", "adapt": "head"},
    "reptile": {"algorithm": "reptile", "adapt": "top"},
    "imaml": {"algorithm": "imaml", "adapt": "head", "algorithm_config": {"inner_steps": 2}},
    "protonet": {"algorithm": "protonet", "adapt": "top", "algorithm_config": {}},
    "protomaml-body": {"algorithm": "protomaml", "adapt": "top"},
}


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_adapts_beyond_max_ways(words, name):
    """Learners with a 4-row head adapt to 17 classes (the algorithm's own adaptation, and
    fine-tuning from it); the meta-learned rows are tiled, never sliced short."""
    spec = dict(ALGORITHMS[name])
    spec.setdefault("algorithm_config", {"inner_steps": 2, "inner_lr": 1e-2, "first_order": True})
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(max_ways=4, max_length=16, policy=None, **spec)
    texts, labels, query = _task(words, 17, 2)
    clf = learner.adapt(texts, labels)
    if "prototypes" in clf.fast:
        assert clf.fast["prototypes"].shape[0] == 17
    else:
        assert clf.fast["head.weight"].shape[0] == 17 and clf.fast["head.bias"].shape == (17,)
    assert clf.predict_proba(query).shape == (17, 17)
    tuned = learner.adapt(texts, labels, finetune={"steps": 3, "params": "top", "top_layers": 1})
    assert tuned.fast["head.weight"].shape[0] == 17
    # Fine-tuning a fresh 17-row head on the support: the support itself is learnt.
    assert tuned.score(texts, labels) >= 0.8


def test_meta_sgd_rates_follow_the_task_rows(words):
    """Meta-SGD's learned per-element rate of the head (4 rows) is tiled with the head: row i
    of the task moves at rate row i mod 4, exactly as a hand-written SGD step."""
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        algorithm="metasgd", adapt="head", max_ways=4, max_length=16, policy=None,
        algorithm_config={"inner_steps": 1, "inner_lr": 1e-2},
    )  # fmt: skip
    rates = learner.algorithm.extra["inner_lr.head.weight"]
    with torch.no_grad():
        rates.copy_(torch.rand_like(rates))
    texts, labels, _ = _task(words, 9, 1)
    clf = learner.adapt(texts, labels)
    batch = learner.tokenizer(texts, padding=True, return_tensors="pt")
    weight = task_rows(learner.model.head.weight.detach(), 9).requires_grad_(True)
    bias = task_rows(learner.model.head.bias.detach(), 9).requires_grad_(True)
    with torch.no_grad():
        feats = learner.model.embed(**batch)
    loss = torch.nn.functional.cross_entropy(feats @ weight.T + bias, torch.arange(9))
    g_w, _ = torch.autograd.grad(loss, [weight, bias])
    expected = weight.detach() - task_rows(rates.detach(), 9) * g_w
    torch.testing.assert_close(clf.fast["head.weight"], expected, rtol=1e-4, atol=1e-6)


def test_ner_tags_beyond_max_ways():
    learner = MetaLearner.from_pretrained(task="token", max_ways=2, max_length=24)
    words = [["Ann", "met", "Bob", "in", "Paris"], ["Google", "opened", "in", "Berlin", "today"]]
    tags = [["person", "O", "person", "O", "loc"], ["org", "O", "O", "loc", "date"]]
    tagger = learner.adapt(words, tags, steps=1)
    assert tagger.fast["head.weight"].shape[0] == 5  # O + 4 types, on a 2-row learner
    out = tagger.predict([["Carl", "visited", "Rome"]])
    assert len(out[0]) == 3 and set(out[0]) <= {"O", "person", "loc", "org", "date"}


def test_learner_saved_in_the_earlier_layout_adapts_beyond_its_head(words, tmp_path):
    """A learner folder as the code before this change wrote it: a 4-row head and inner
    rates, a policy without ``baselines`` / ``probe_c`` / ``max_cv_examples``. It loads, keeps
    its head, and adapts to 17 classes with the new candidates on."""
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(
        algorithm="metasgd", adapt="top", max_ways=4, max_length=16,
        algorithm_config={"inner_steps": 1, "inner_lr": 1e-3, "first_order": True},
    )  # fmt: skip
    with torch.no_grad():
        learner.model.head.weight.add_(0.1 * torch.randn_like(learner.model.head.weight))
    folder = learner.save_pretrained(tmp_path / "old")
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["policy"] = {  # the AdaptPolicy fields of the earlier version, as it saved them
        "steps": [0, 4, 8], "lrs": [0.0005], "folds": 2, "head_lr": 0.005, "params": "top",
        "top_layers": 2, "head_start": "zero", "fallback_steps": 6, "fallback_lr": 0.0001,
        "fallback_params": "top", "fallback_top_layers": 4,
    }  # fmt: skip
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    loaded = MetaLearner.from_pretrained(folder)
    from safetensors.torch import load_file

    assert load_file(folder / HEAD_NAME)["head.weight"].shape[0] == 4
    torch.testing.assert_close(loaded.model.head.weight, learner.model.head.weight)
    assert loaded.policy.baselines == ("no-adaptation", "frozen-lr")
    texts, labels, query = _task(words, 17, 2)
    clf = loaded.adapt(texts, labels)
    assert clf.decision is not None and "frozen-lr" in clf.decision.scores
    assert clf.predict_proba(query).shape == (17, 17)
    assert _accuracy(clf, query, words, 17) >= 0.6
