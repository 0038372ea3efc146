"""What `MetaLearner.adapt` returns, as a user ships it (real MiniLM): saved and loaded back
without the learner's folder with identical predictions, pushed to (a local stand-in of) the
Hub and pulled in a fresh process, callable on a string, a list, numpy, pandas or a `datasets`
column, in batches with a progress bar, NER probabilities, and temperature calibration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from datasets import Dataset
from hub_server import FakeHub
from text_examples import IOB2_TAGS, LABELS, QUERY, TEXTS, WORDS

from metanlp.api import UNTRAINED_POLICY, MetaLearner
from metanlp.files import CorruptFileError
from metanlp.predictors import FewShotClassifier, FewShotTagger, fit_temperature

SENTENCES = [["Carl", "visited", "Rome"], ["Microsoft", "hired", "Dana", "in", "New", "York"]]


@pytest.fixture(scope="module")
def lora_learner(tmp_path_factory):
    """A Meta-SGD learner on LoRA whose adapter, head and inner rates are off their init (as
    after meta-training), saved to a folder: the classifier must not need that folder."""
    torch.manual_seed(1)
    learner = MetaLearner.from_pretrained(
        None, algorithm="metasgd", adapt="lora", adapt_options={"lora_r": 4}, max_length=32,
        algorithm_config={"inner_steps": 2, "inner_lr": 1e-2, "first_order": True},
    )  # fmt: skip
    learner.config.meta_trained = True
    with torch.no_grad():
        for name, p in learner.model.named_parameters():
            if "lora_" in name or name.startswith("head."):
                p.add_(0.05 * torch.randn_like(p))
    return learner


@pytest.fixture(scope="module")
def clf(lora_learner):
    # The LoRA learner itself (the original encoder's candidates are tested in test_policy_base).
    return lora_learner.adapt(TEXTS, LABELS, policy={**UNTRAINED_POLICY, "base": []})


@pytest.fixture(scope="module")
def tagger():
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(task="token", max_length=32).adapt(WORDS, IOB2_TAGS, steps=2)


def test_saved_classifier_predicts_exactly_the_same_without_the_learner(clf, tmp_path):
    learner_folder = clf.learner.save_pretrained(tmp_path / "learner")
    clf.temperature = 1.7
    try:
        folder = clf.save_pretrained(tmp_path / "clf")
    finally:
        clf.temperature = None
    shutil.rmtree(learner_folder)  # the original learner is gone
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"metanlp_predictor.json", "fast_weights.safetensors", "README.md",
            "learner/metanlp_config.json", "learner/adapter/adapter_model.safetensors"} <= names  # fmt: skip
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".pickle")) for n in names)
    loaded = FewShotClassifier.from_pretrained(folder, device="cpu")
    assert loaded.classes_ == clf.classes_ and loaded.temperature == 1.7
    assert set(loaded.fast) == set(clf.fast)
    assert all(torch.equal(loaded.fast[k], clf.fast[k].cpu()) for k in clf.fast)
    assert torch.equal(loaded.logits(QUERY + TEXTS), clf.logits(QUERY + TEXTS))
    assert loaded.predict(QUERY + TEXTS) == clf.predict(QUERY + TEXTS)
    scaled = torch.softmax(clf.logits(QUERY).double() / 1.7, -1).numpy()
    assert np.array_equal(loaded.predict_proba(QUERY), scaled)
    with pytest.raises(TypeError, match="FewShotClassifier.from_pretrained"):
        FewShotTagger.from_pretrained(folder)


def test_saved_tagger_round_trip_and_probabilities(tagger, tmp_path):
    proba = tagger.predict_proba(SENTENCES)
    tags = tagger.predict(SENTENCES)
    assert [p.shape for p in proba] == [(3, 4), (6, 4)]  # O, person, loc, org
    assert all(np.allclose(p.sum(1), 1.0) for p in proba)
    from metanlp.metrics.functional import to_iob2

    assert tags == [to_iob2([tagger.tag_names[i] for i in p.argmax(1)]) for p in proba]
    assert tagger(SENTENCES[0]) == tags[0]  # one sentence -> one tag list
    assert np.array_equal(tagger.predict_proba(SENTENCES[1]), proba[1])
    loaded = FewShotTagger.from_pretrained(tagger.save_pretrained(tmp_path / "tagger"))
    assert loaded.tag_names == tagger.tag_names and loaded.iob2 is True
    assert loaded.predict(SENTENCES) == tags
    assert all(
        np.array_equal(a, b) for a, b in zip(loaded.predict_proba(SENTENCES), proba, strict=True)
    )


def test_predict_takes_any_collection_of_texts(clf):
    expected = clf.predict(QUERY)
    assert isinstance(clf.predict(QUERY[0]), str) and clf.predict(QUERY[0]) == expected[0]
    assert clf(QUERY) == expected
    column = Dataset.from_dict({"text": QUERY})["text"]
    for texts in (tuple(QUERY), np.array(QUERY), pd.Series(QUERY), column):
        assert clf.predict(texts) == expected, type(texts).__name__
    assert clf.predict_proba(QUERY[0]).shape == (3,)
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 3)
    with pytest.raises(TypeError, match=r"dataset\['text'\]"):
        clf.predict(Dataset.from_dict({"text": QUERY}))
    with pytest.raises(ValueError, match="1-D"):
        clf.predict(np.array([QUERY]))
    with pytest.raises(ValueError, match="batch_size=0"):
        clf.predict(QUERY, batch_size=0)


def test_batches_and_progress_bar(clf, capsys):
    texts = QUERY + TEXTS
    one = clf.predict_proba(texts, batch_size=1)
    assert np.allclose(one, clf.predict_proba(texts), atol=1e-5)
    assert clf.predict(texts, batch_size=3) == clf.predict(texts)
    clf.predict(texts, batch_size=2, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "predict" in err and "8/8" in err
    clf.predict(texts, batch_size=2)  # 4 batches: short, no bar by default
    assert "predict" not in capsys.readouterr().err


@pytest.mark.parametrize("prior", [None, 1.0], ids=["likelihood", "log-normal-prior"])
def test_fit_temperature_matches_scipy(prior):
    """The grid search finds the temperature scipy's bounded minimiser finds, and the prior
    keeps a few held-out examples, all right, from pushing it to the bound."""
    from scipy.optimize import minimize_scalar

    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(60, 4, generator=g, dtype=torch.float64)
    labels = torch.where(torch.rand(60, generator=g) < 0.6, logits.argmax(1), torch.arange(60) % 4)

    def objective(log_t: float) -> float:
        nll = torch.nn.functional.cross_entropy(logits / np.exp(log_t), labels, reduction="sum")
        return float(nll) + (0.0 if prior is None else log_t**2 / (2 * prior**2))

    best = float(np.exp(minimize_scalar(objective, bounds=(-4, 4), method="bounded").x))
    assert fit_temperature(logits, labels, prior=prior) == pytest.approx(best, rel=0.02)
    right = logits[:2], logits[:2].argmax(1)  # two held-out examples, both right
    assert fit_temperature(*right, prior=None) == 0.01  # likelihood alone: the bound
    assert 0.1 < fit_temperature(*right, prior=prior or 1.0) < 1.0


def test_calibration_on_the_support_set(lora_learner):
    """calibrate=True fits the temperature on held-out support folds: predictions stay, the
    probabilities are those of logits / T, and 1-shot support sets get a clear error."""
    texts = TEXTS + ["Oil prices rose on supply worries", "The keeper saved two penalties",
                     "The laptop ships with more memory"]  # fmt: skip
    labels = LABELS + ["business", "sport", "tech"]
    plain = lora_learner.adapt(texts, labels)
    calibrated = lora_learner.adapt(texts, labels, calibrate=True)
    assert calibrated.temperature is not None and calibrated.temperature > 0
    assert calibrated.predict(QUERY) == plain.predict(QUERY)
    expected = torch.softmax(plain.logits(QUERY).double() / calibrated.temperature, -1).numpy()
    assert np.allclose(calibrated.predict_proba(QUERY), expected)
    with pytest.raises(ValueError, match="at least 2 examples of every class"):
        lora_learner.adapt(TEXTS[::2], LABELS[::2], calibrate=True)
    t = plain.calibrate(QUERY, ["business", "sport"])
    assert plain.temperature == t == fit_temperature(plain.logits(QUERY), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not classes of this task"):
        plain.calibrate(QUERY, ["business", "weather"])


def test_bad_saves_and_damaged_folders(clf, tmp_path):
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a saved classifier or tagger"):
        clf.save_pretrained(other)
    assert (other / "todo.txt").read_text() == "mine"
    learner_folder = clf.learner.save_pretrained(tmp_path / "learner")
    with pytest.raises(FileExistsError, match="not a saved classifier or tagger"):
        clf.save_pretrained(learner_folder)
    assert (learner_folder / "metanlp_config.json").is_file()
    odd = FewShotClassifier(clf.learner, clf.fast, [("a", 1), ("b", 2), ("c", 3)])
    with pytest.raises(ValueError, match="cannot be saved"):
        odd.save_pretrained(tmp_path / "odd")
    assert not (tmp_path / "odd").exists()
    folder = clf.save_pretrained(tmp_path / "clf")
    clf.save_pretrained(folder)  # its own folder is replaced
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        clf.save_pretrained(folder)
    (folder / "notes.txt").unlink()
    fast = folder / "fast_weights.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(fast))
    tensors["head.weight"] = tensors["head.weight"][:, :5].contiguous()
    save_file(tensors, str(fast))
    with pytest.raises(CorruptFileError, match="head.weight") as info:
        FewShotClassifier.from_pretrained(folder)
    assert str(fast) in str(info.value)
    fast.write_bytes(b"\0" * 10)
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        FewShotClassifier.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="not a saved classifier"):
        FewShotClassifier.from_pretrained(tmp_path / "notes")


LOAD_FROM_HUB = """
import json, sys
from metanlp.predictors import FewShotClassifier
clf = FewShotClassifier.from_pretrained(sys.argv[1])
print(json.dumps({"classes": clf.classes_, "proba": clf.predict_proba(json.loads(sys.argv[2])).tolist()}))
"""


def test_push_to_hub_and_load_in_a_fresh_process(clf, monkeypatch, tmp_path):
    from huggingface_hub import constants

    expected = clf.predict_proba(QUERY)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        clf.push_to_hub("alice/topics", token="t", endpoint=hub.url)
        card = hub.repos["alice/topics"]["files"]["README.md"].decode()
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "t"}  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-c", LOAD_FROM_HUB, "alice/topics", json.dumps(QUERY)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["classes"] == clf.classes_
    assert np.array_equal(np.array(out["proba"]), expected)
    assert hub.unexpected == [] and len(hub.commits) == 1
    assert 'FewShotClassifier.from_pretrained("alice/topics")' in card
    assert "pipeline_tag: text-classification" in card and "not calibrated" in card


def test_policy_decision_is_saved_with_the_classifier(lora_learner, tmp_path):
    clf = lora_learner.adapt(TEXTS, LABELS, policy={"steps": [0, 1], "lrs": [1e-4]})
    assert clf.decision is not None and clf.decision.scores  # 2-fold CV ran
    loaded = FewShotClassifier.from_pretrained(clf.save_pretrained(tmp_path / "clf"))
    assert loaded.decision.to_dict() == clf.decision.to_dict()
    assert loaded.predict(QUERY) == clf.predict(QUERY)
