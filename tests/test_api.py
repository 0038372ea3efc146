"""MetaLearner with the real MiniLM: adapt/predict, untouched meta-weights, clear input errors,
and an exact save/load round trip (LoRA in PEFT format, head, learned inner LRs, tokenizer)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from text_examples import IOB2_TAGS, LABELS, QUERY, TEXTS, WORDS

from metanlp.api import MetaLearner


@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
def test_plain_encoder_with_another_algorithm_takes_its_defaults(algorithm):
    """Proto-MAML's untrained inner-loop settings are not forced on another algorithm (ProtoNet
    rejected ``inner_steps=5``); the learner adapts and predicts."""
    learner = MetaLearner.from_pretrained(algorithm=algorithm, max_length=32)
    assert learner.config.algorithm == algorithm
    assert learner.config.algorithm_config == {}
    clf = learner.adapt(TEXTS, LABELS, steps=None if algorithm == "protonet" else 1)
    assert set(clf.predict(QUERY)) <= set(LABELS)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def learner():
    torch.manual_seed(0)
    return MetaLearner.from_pretrained()  # packaged MiniLM, no meta-training


@pytest.fixture(scope="module")
def lora_learner():
    """A Meta-SGD learner on LoRA whose adapter, head and inner rates are not at their init,
    standing in for the result of meta-training (every saved tensor must then round-trip)."""
    torch.manual_seed(1)
    learner = MetaLearner.from_pretrained(
        None,
        algorithm="metasgd",
        adapt="lora",
        adapt_options={"lora_r": 4},
        algorithm_config={"inner_steps": 2, "inner_lr": 1e-2, "first_order": True},
        max_length=32,
    )
    learner.config.meta_trained = True
    with torch.no_grad():
        for name, p in learner.model.named_parameters():
            if "lora_" in name or name.startswith("head."):
                p.add_(0.05 * torch.randn_like(p))
        for p in learner.algorithm.extra.values():
            p.mul_(torch.empty_like(p).uniform_(0.5, 1.5))
    return learner


def test_adapt_predicts_label_names_and_leaves_weights_untouched(learner):
    before = _state(learner.model)
    clf = learner.adapt(TEXTS, LABELS, steps=2)
    predicted = clf.predict(QUERY)
    probs = clf.predict_proba(QUERY)
    assert clf.classes_ == ["business", "sport", "tech"]
    assert predicted == ["business", "sport"]
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1.0)
    assert [clf.classes_[i] for i in probs.argmax(1)] == predicted
    after = learner.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_any_label_names(learner):
    clf = learner.adapt(TEXTS[:4], [7, 7, "x", "x"], steps=1)
    assert set(clf.predict(QUERY)) <= {7, "x"}


@pytest.mark.parametrize(
    "texts,labels,error,match",
    [
        (TEXTS[:2], ["a", "a"], ValueError, "at least 2 classes"),
        (TEXTS[:3], ["a", "b"], ValueError, "3 texts but 2 labels"),
        (["good", "  "], ["a", "b"], ValueError, "empty"),
        ("just one string", ["a"], TypeError, "list of strings"),
        ([], [], ValueError, "empty"),
    ],
    ids=["one-class", "lengths", "empty-text", "string", "no-texts"],
)
def test_bad_classification_input(learner, texts, labels, error, match):
    with pytest.raises(error, match=match):
        learner.adapt(texts, labels)


def test_save_load_round_trip_is_exact(lora_learner, tmp_path):
    clf = lora_learner.adapt(TEXTS, LABELS)
    folder = lora_learner.save_pretrained(tmp_path / "learner")
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {
        "metanlp_config.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "head.safetensors",
        "inner_lrs.safetensors",
        "tokenizer.json",
        "README.md",
    } <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".pickle")) for n in names)
    assert "encoder/model.safetensors" not in names  # only LoRA was meta-learned
    adapter_cfg = json.loads((folder / "adapter/adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"

    loaded = MetaLearner.from_pretrained(folder)
    assert loaded.config == lora_learner.config
    original, restored = _state(lora_learner.model), _state(loaded.model)
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    for k, v in lora_learner.algorithm.state_dict().items():
        assert torch.equal(v, loaded.algorithm.state_dict()[k])
    again = loaded.adapt(TEXTS, LABELS)
    assert np.array_equal(clf.predict_proba(QUERY), again.predict_proba(QUERY))


@pytest.mark.parametrize("bars_before", [True, False])
def test_save_and_load_print_no_transformers_bars(learner, tmp_path, capfd, bars_before):
    from transformers.utils import logging as tf_logging

    (tf_logging.enable_progress_bar if bars_before else tf_logging.disable_progress_bar)()
    try:
        # meta_trained: the encoder weights are written too (the "Writing model shards" bar)
        trained = MetaLearner(learner.algorithm, replace(learner.config, meta_trained=True))
        folder = trained.save_pretrained(tmp_path / "learner")
        assert (folder / "encoder").is_dir()
        MetaLearner.from_pretrained(folder)
        err = capfd.readouterr().err
        assert "Writing model shards" not in err and "Loading weights" not in err
        assert tf_logging.is_progress_bar_enabled() == bars_before  # the user's setting stays
    finally:
        tf_logging.enable_progress_bar()


def test_save_is_atomic(learner, tmp_path, monkeypatch):
    folder = learner.save_pretrained(tmp_path / "learner")
    first = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(type(learner.tokenizer), "save_pretrained", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        learner.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learner"]  # no temporary left
    with pytest.raises(ValueError, match="cannot be overridden"):
        MetaLearner.from_pretrained(folder, adapt="all")


@pytest.fixture(scope="module")
def ner_learner():
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(task="token")


def test_ner_adapt_predicts_word_level_tags(ner_learner):
    before = _state(ner_learner.model)
    tagger = ner_learner.adapt(WORDS, IOB2_TAGS, steps=2)
    sentences = [["Carl", "visited", "Rome"], ["Microsoft", "hired", "Dana", "in", "New", "York"]]
    tags = tagger.predict(sentences)
    assert [len(t) for t in tags] == [3, 6]
    allowed = {"O"} | {f"{p}-{t}" for p in "BI" for t in ("person", "loc", "org")}
    assert {t for sent in tags for t in sent} <= allowed
    for sent in tags:  # valid IOB2: an I- continues an entity of its type
        for prev, cur in zip(["O", *sent], sent, strict=False):
            assert not cur.startswith("I-") or prev[2:] == cur[2:]
    io = ner_learner.adapt(
        WORDS, [[t[2:] if t != "O" else t for t in s] for s in IOB2_TAGS], steps=1
    )
    assert {t for s in io.predict(sentences) for t in s} <= {"O", "person", "loc", "org"}
    assert all(torch.equal(v, ner_learner.model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize(
    "tags,match",
    [
        ([["S-person", "O", "O", "O", "O"], *IOB2_TAGS[1:]], "Unknown tag 'S-person'"),
        (
            [["B-persn", "O", "B-person", "O", "B-loc"], *IOB2_TAGS[1:]],
            r"Unknown tag type\(s\) \['persn'\]",
        ),
        ([["O", "O"], *IOB2_TAGS[1:]], "5 words but 2"),
        (IOB2_TAGS[:2], "3 sentences but 2"),
        ([["O"] * 5, ["O"] * 6, ["O"] * 4], "No entity"),
    ],
    ids=["bioes", "unknown-type", "word-count", "sentence-count", "no-entity"],
)
def test_bad_ner_input(ner_learner, tags, match):
    with pytest.raises(ValueError, match=match):
        ner_learner.adapt(WORDS, tags, entity_types=["person", "loc", "org"])


def test_plain_encoder_folder_is_an_untrained_learner():
    from metanlp.models import default_model_path

    learner = MetaLearner.from_pretrained(default_model_path())
    assert learner.config.meta_trained is False
    assert learner.config.base_model == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    "name, target",
    [
        ("outputs/general_learner/meta/learner", "make general"),
        ("outputs/demo/meta/learner", "make demo"),
        ("./my_learner", None),
        ("~/no-such-folder-metanlp/learner", None),
        ("runs/lerner", None),  # runs/ exists: a typo of a local folder, not a Hub id
    ],
    ids=["general", "demo", "dot-slash", "home", "existing-parent"],
)
def test_missing_local_learner_says_the_folder_does_not_exist(tmp_path, monkeypatch, name, target):
    """Issue 27 item 5: a mistyped or not-yet-built learner path names the folder (and the
    make target that builds it), never the default model's pip install."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        MetaLearner.from_pretrained(name)
    message = str(err.value)
    assert name in message and "pip install" not in message
    if target is not None:
        assert f"`{target}` builds it" in message
    else:
        assert "make " not in message and "save_pretrained()" in message


def test_hub_like_names_are_not_taken_for_local_paths(tmp_path, monkeypatch):
    from metanlp.api import looks_local

    monkeypatch.chdir(tmp_path)
    assert not looks_local("sentence-transformers/all-MiniLM-L6-v2")
    assert not looks_local("bert-base-uncased")
    assert looks_local("a/b/c") and looks_local("/abs") and looks_local("../up")
