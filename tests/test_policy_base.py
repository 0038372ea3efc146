"""The adaptation policy's candidates on the original encoder (`AdaptPolicy.base`), real MiniLM.

A meta-trained learner is checked against the encoder it started from, on the same folds, so
meta-training can only add where the support set can tell. The references: a learner whose
encoder *is* the original gives exactly the original's scores (the two paths compute the same
thing); one whose encoder was re-initialised at random loses to the original, and the
classifier it hands back is then the frozen logistic-regression baseline (or the plain
fine-tuning) on the original encoder, prediction for prediction, also after save and load.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metanlp.api import MetaLearner
from metanlp.baselines import FineTuneBaseline
from metanlp.episodes.types import Episode
from metanlp.inputs import encode_texts
from metanlp.meta.finetune import FineTuneConfig
from metanlp.meta.policy import AdaptPolicy
from metanlp.predictors import FewShotClassifier

TEXTS = [
    "Shares fell sharply as the bank cut its profit forecast",
    "The central bank raised interest rates again",
    "Investors sold stocks after weak quarterly earnings",
    "The company reported record revenue this year",
    "The striker scored twice in the cup final",
    "The coach praised his team after the win",
    "The goalkeeper saved a late penalty",
    "The tennis champion lost in the first round",
    "The new phone has a faster chip and a better camera",
    "A software update fixes the security flaw",
    "The laptop ships with more memory and a brighter screen",
    "Engineers released a new version of the operating system",
]
LABELS = ["business"] * 4 + ["sport"] * 4 + ["tech"] * 4
QUERY = ["Oil prices lifted energy stocks", "The team won the league", "A bug crashed the app"]
POLICY = AdaptPolicy(steps=(0, 2), lrs=(1e-3,), top_layers=1)


def _meta_trained(encoder_reset: bool) -> MetaLearner:
    """A learner marked meta-trained from the packaged MiniLM; with ``encoder_reset`` its
    encoder is re-initialised at random (a meta-training gone wrong)."""
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(max_length=24)
    learner.config = dataclasses.replace(learner.config, meta_trained=True)
    if encoder_reset:
        with torch.no_grad():
            for weight in learner.model.base_encoder.parameters():
                if weight.dim() > 1:
                    weight.normal_(0.0, 0.02)
    return learner


def _sklearn_probe(base: MetaLearner, query: list[str]) -> list[str]:
    """The frozen-LR reference: scikit-learn on the original encoder's normalised embeddings."""
    from sklearn.linear_model import LogisticRegression

    def embed(texts):
        batch = encode_texts(base.tokenizer, texts, 24)
        with torch.no_grad():
            return torch.nn.functional.normalize(base.model.embed(**batch), dim=-1).numpy()

    return list(LogisticRegression(max_iter=1000).fit(embed(TEXTS), LABELS).predict(embed(query)))


def test_same_encoder_gives_the_same_scores_and_keeps_the_learner():
    learner = _meta_trained(encoder_reset=False)
    clf = learner.adapt(TEXTS, LABELS, policy=POLICY)
    scores = clf.decision.scores
    base_keys = {k for k in scores if k.startswith("base ")}
    assert base_keys == {"base frozen-lr", "base steps=10 lr=5e-05"}
    assert scores["base frozen-lr"] == scores["frozen-lr"]
    # Every tie goes to the learner itself.
    assert clf.decision.encoder == "learner" and clf.learner is learner
    best = max((s["accuracy"], -s["loss"]) for s in scores.values())
    assert (clf.decision.best["accuracy"], -clf.decision.best["loss"]) == best


@pytest.mark.parametrize("candidate", ["frozen-lr", "fine-tune"])
def test_a_broken_encoder_hands_back_the_original_encoders_baseline(tmp_path, candidate):
    learner = _meta_trained(encoder_reset=True)
    policy = dataclasses.replace(POLICY, base=(candidate,), base_finetune={"steps": 3})
    clf = learner.adapt(TEXTS, LABELS, policy=policy)
    decision = clf.decision
    assert decision.encoder == "base" and decision.choice == candidate, decision.scores
    assert clf.learner is learner.base_learner() and clf.learner is not learner
    assert not clf.learner.config.meta_trained
    scores = decision.scores
    best = max(scores, key=lambda k: (scores[k]["accuracy"], -scores[k]["loss"]))
    assert best.startswith("base ") and scores[best] == decision.best
    assert "on the original encoder" in decision.summary()
    base = MetaLearner.from_pretrained(max_length=24)  # the references, on their own
    if candidate == "frozen-lr":
        expected = _sklearn_probe(base, QUERY)
    else:  # plain fine-tuning: every weight, 3 AdamW steps at 5e-5, a zero head
        assert decision.finetune == FineTuneConfig(steps=3)
        names = sorted(set(LABELS))
        support = dict(encode_texts(base.tokenizer, TEXTS, 24))
        support["labels"] = torch.tensor([names.index(y) for y in LABELS])
        episode = Episode(
            support=support, query=dict(encode_texts(base.tokenizer, QUERY, 24)), n_way=3,
            label_names=names, kind="classification", task="t", support_inputs=TEXTS,
            query_inputs=QUERY, support_targets=[], query_targets=[],
        )  # fmt: skip
        logits = FineTuneBaseline(base.model, steps=3).query_logits(episode)
        torch.testing.assert_close(clf.logits(QUERY), logits, atol=1e-4, rtol=1e-4)
        expected = [names[i] for i in logits.argmax(-1).tolist()]
    assert clf.predict(QUERY) == list(expected)
    saved = FewShotClassifier.from_pretrained(clf.save_pretrained(tmp_path / "clf"))
    assert saved.predict(QUERY) == clf.predict(QUERY)
    assert saved.decision.encoder == "base"


def test_base_candidates_can_be_left_out():
    learner = _meta_trained(encoder_reset=True)
    clf = learner.adapt(TEXTS, LABELS, policy=dataclasses.replace(POLICY, base=()))
    assert clf.decision.encoder == "learner" and clf.learner is learner
    assert not any(k.startswith("base ") for k in clf.decision.scores)


def test_a_plain_encoder_is_its_own_base():
    learner = MetaLearner.from_pretrained(max_length=24)
    assert learner.base_learner() is None
    clf = learner.adapt(TEXTS, LABELS, policy=POLICY)
    assert not any(k.startswith("base ") for k in clf.decision.scores)


@pytest.mark.parametrize("bad", ["frozen", ["linear"], "frozen-lr", ["adapt"]])
def test_bad_base_candidates_are_named(bad):
    with pytest.raises(ValueError, match="AdaptPolicy.base"):
        AdaptPolicy(base=bad)


def test_base_finetune_settings_are_checked_and_saved():
    with pytest.raises(ValueError, match=r"FineTuneConfig.steps=0"):
        AdaptPolicy(base_finetune={"steps": 0})
    with pytest.raises(ValueError, match="base_finetune=3"):
        AdaptPolicy(base_finetune=3)
    policy = AdaptPolicy(base=["frozen-lr"], base_finetune={"steps": 4, "lr": 1e-4})
    assert AdaptPolicy.coerce(policy.to_dict()) == policy
    assert policy.base_policy().steps == () and policy.base_policy().baselines == ("frozen-lr",)
