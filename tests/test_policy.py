"""The support-set adaptation policy (`metanlp.meta.policy`) with the real MiniLM.

The references: every cross-validation score the policy reports is recomputed by hand, one
fold and one candidate at a time, with the learner's explicit ``finetune=`` on the fold's
training rows (so the trajectory bookkeeping and the frozen-prefix cache must agree with plain
separate runs); the policy must work when the query labels cannot even be read.
"""

from __future__ import annotations

import pytest
import torch
from text_examples import LABELS, QUERY, TEXTS

from metanlp.api import MetaLearner
from metanlp.episodes.types import Episode
from metanlp.inputs import encode_texts
from metanlp.meta.finetune import FineTuneConfig, finetune_fast_weights, with_frozen_prefix
from metanlp.meta.policy import AdaptPolicy, choose_adaptation, stratified_folds

SMALL = AdaptPolicy(steps=(0, 1, 3), lrs=(1e-4, 1e-3), folds=2, top_layers=1)


@pytest.fixture(scope="module")
def learner():
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(
        max_length=24, algorithm="protonet", adapt="all", algorithm_config={}
    )


@pytest.fixture(scope="module")
def proto_maml():
    return MetaLearner.from_pretrained(max_length=24)  # the default: Proto-MAML + the policy


def _support(learner, texts=TEXTS, labels=LABELS):
    names = sorted(set(labels))
    batch = dict(encode_texts(learner.tokenizer, texts, learner.config.max_length))
    batch["labels"] = torch.tensor([names.index(y) for y in labels])
    return batch, names


def test_stratified_folds():
    labels = [0, 0, 1, 1, 1, 2, 2, 0]
    folds = stratified_folds(labels, 2)
    assert sorted(i for f in folds for i in f) == list(range(len(labels)))
    for fold in folds:
        assert {labels[i] for i in fold} == {0, 1, 2}
    assert stratified_folds([0, 0, 1], 2) is None  # class 1 has one example
    assert stratified_folds(labels, 3) is None
    assert stratified_folds(labels, 2) == folds  # deterministic


def _fold_accuracy(predict, held):
    predicted = predict([TEXTS[i] for i in held])
    return sum(p == LABELS[i] for p, i in zip(predicted, held, strict=True)) / len(held)


def _sklearn_probe_accuracy(learner, keep, held):
    """The frozen-LR reference: scikit-learn on the encoder's normalised mean embeddings."""
    from sklearn.linear_model import LogisticRegression

    def embed(rows):
        batch = encode_texts(learner.tokenizer, [TEXTS[i] for i in rows], learner.config.max_length)
        with torch.no_grad():
            return torch.nn.functional.normalize(learner.model.embed(**batch), dim=-1).numpy()

    clf = LogisticRegression(max_iter=1000).fit(embed(keep), [LABELS[i] for i in keep])
    return float((clf.predict(embed(held)) == [LABELS[i] for i in held]).mean())


@pytest.mark.parametrize("algorithm", ["protonet", "protomaml"])
def test_scores_equal_separate_runs_per_fold_and_candidate(learner, proto_maml, algorithm):
    learner = learner if algorithm == "protonet" else proto_maml
    support, names = _support(learner)
    decision = choose_adaptation(learner.algorithm, support, len(names), SMALL)
    assert decision.reason == "2-fold CV on the support set"
    # ProtoNet's adaptation has no inner steps: "no adaptation" would repeat "steps=0".
    expected = {"frozen-lr", *(f"steps={s} lr={r:g}" for s in (1, 3) for r in SMALL.lrs)}
    expected |= {"steps=0 lr=0"} | ({"no-adaptation"} if algorithm == "protomaml" else set())
    assert set(decision.scores) == expected
    folds = stratified_folds(support["labels"].tolist(), 2)
    for key, got in decision.scores.items():
        accuracies = []
        for held in folds:
            keep = [i for i in range(len(TEXTS)) if i not in held]
            if key == "frozen-lr":
                accuracies.append(_sklearn_probe_accuracy(learner, keep, held))
                continue
            texts, labels = [TEXTS[i] for i in keep], [LABELS[i] for i in keep]
            if key == "no-adaptation":
                clf = learner.adapt(texts, labels, steps=0, policy=False)
            else:
                steps, lr = int(key.split()[0][6:]), float(key.split()[1][3:])
                finetune = SMALL.finetune_config(steps, lr) if steps else False
                clf = learner.adapt(texts, labels, finetune=finetune, policy=False)
            accuracies.append(_fold_accuracy(clf.predict, held))
        assert got["accuracy"] == pytest.approx(sum(accuracies) / len(folds), abs=1e-4), key
    best = max(decision.scores.values(), key=lambda s: s["accuracy"])["accuracy"]
    chosen = {"fine-tune": None, "adapt": "steps=0 lr=0"}.get(decision.choice, decision.choice)
    if decision.finetune is not None:
        chosen = f"steps={decision.finetune.steps} lr={decision.finetune.lr:g}"
    assert decision.scores[chosen]["accuracy"] == best


def test_never_reads_query_labels(learner):
    """Query labels that raise on any use: the policy (and the learner) must not touch them."""

    class Poisoned(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            raise AssertionError(f"query labels were read ({func})")

    support, names = _support(learner)
    query = dict(encode_texts(learner.tokenizer, QUERY, learner.config.max_length))
    clean = dict(query, labels=torch.tensor([0, 1]))
    poisoned = dict(query, labels=torch.tensor([0, 1]).as_subclass(Poisoned))
    with pytest.raises(AssertionError, match="query labels were read"):
        poisoned["labels"].sum()  # the poison works
    policy_learner = MetaLearner(learner.algorithm, learner.config)
    policy_learner.config.policy = SMALL.to_dict()
    try:
        outputs = []
        for q in (clean, poisoned):
            episode = Episode(
                support=support, query=q, n_way=3, label_names=names, kind="classification",
                task="t", support_inputs=TEXTS, query_inputs=QUERY, support_targets=[],
                query_targets=[],
            )  # fmt: skip
            outputs.append(policy_learner.query_logits(episode))
            outputs.append(policy_learner.last_decision.to_dict())
    finally:
        policy_learner.config.policy = None
    assert torch.equal(outputs[0], outputs[2])
    outputs[1].pop("seconds"), outputs[3].pop("seconds")
    assert outputs[1] == outputs[3]


def test_one_shot_uses_the_fallback_and_says_so(learner):
    texts, labels = TEXTS[::2], LABELS[::2]  # one example per class
    clf = learner.adapt(texts, labels, policy=AdaptPolicy(fallback_steps=2, fallback_lr=1e-4))
    assert clf.decision.finetune == FineTuneConfig(steps=2, lr=1e-4, params="top", top_layers=4)
    assert "fallback" in clf.decision.reason and "fewer than 2" in clf.decision.reason
    assert clf.predict(QUERY)[0] in set(labels)
    off = learner.adapt(texts, labels, policy=AdaptPolicy(fallback_steps=0))
    assert off.decision.finetune is None


def test_frozen_prefix_fine_tuning_is_exact(learner):
    support, names = _support(learner)
    start = learner.algorithm.adapt(support, len(names))
    config = FineTuneConfig(steps=3, lr=1e-3, params="top", top_layers=2)
    cached = finetune_fast_weights(learner.algorithm, support, len(names), config, start)
    # the reference: the same fine-tuning with the whole forward run at every step
    plain = dict(start)
    import metanlp.meta.finetune as ft

    original = ft.with_frozen_prefix
    ft.with_frozen_prefix = lambda algorithm, batch, trainable: batch
    try:
        plain = finetune_fast_weights(learner.algorithm, support, len(names), config, start)
    finally:
        ft.with_frozen_prefix = original
    assert set(cached) == set(plain)
    assert "base_encoder.encoder.layer.0.attention.self.query.weight" not in cached
    for name in cached:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-5)
    prefixed = with_frozen_prefix(learner.algorithm, support, list(cached))
    assert "frozen_prefix_hidden" in prefixed and prefixed["frozen_prefix_layer"] == 4


def test_saved_policy_round_trip_and_overrides(learner, tmp_path):
    learner.config.policy = SMALL.to_dict()
    try:
        folder = learner.save_pretrained(tmp_path / "general")
    finally:
        learner.config.policy = None
    loaded = MetaLearner.from_pretrained(folder)
    assert loaded.policy == SMALL
    clf = loaded.adapt(TEXTS, LABELS)
    assert clf.decision is not None and clf.decision.scores
    assert loaded.adapt(TEXTS, LABELS, finetune=False).decision is None  # explicit wins
    assert MetaLearner.from_pretrained(folder, policy=False).policy is None


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"steps": (-1,)}, "ints >= 0"),
        ({"steps": (), "baselines": ()}, "no candidate"),
        ({"baselines": ("svm",)}, r"unknown candidate\(s\) \['svm'\]"),
        ({"baselines": "frozen-lr"}, "give a list"),
        ({"probe_c": 0}, "probe_c=0"),
        ({"max_cv_examples": 1}, "max_cv_examples=1"),
        ({"fallback": "svm"}, "fallback='svm'"),
        ({"lrs": ()}, "at least one learning rate"),
        ({"lrs": (0.0,)}, "must be > 0"),
        ({"folds": 1}, "folds=1"),
        ({"params": "nope"}, "params='nope'"),
        ({"fallback_top_layers": 0}, "fallback_top_layers=0"),
        ({"speed": 2}, r"unknown field\(s\) \['speed'\]"),
    ],
    ids=[
        "negative-steps",
        "no-candidate",
        "unknown-baseline",
        "baselines-string",
        "probe-c",
        "cv-cap",
        "fallback-kind",
        "no-lr",
        "zero-lr",
        "one-fold",
        "bad-params",
        "fallback-layers",
        "unknown-field",
    ],
)
def test_bad_policy_is_named(fields, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdaptPolicy.coerce(fields)


def test_the_fallback_has_its_own_layer_count(learner):
    policy = AdaptPolicy(fallback_steps=1)
    assert policy.finetune_config(4, 5e-4).top_layers == policy.top_layers == 2
    clf = learner.adapt(TEXTS[::2], LABELS[::2], policy=policy)  # one example per class
    assert clf.decision.finetune == policy.fallback_config()
    assert clf.decision.finetune.top_layers == 4 and clf.decision.finetune.params == "top"


def _episodes(data_dir, tokenizer, setting, n):
    """A few fixed episodes of a held-out setting (the real corpora, 48-token texts)."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler

    if setting == "bbc_5w5s":
        data, shape = load_corpus("bbc_news", data_dir), {"n_way": 5, "k_shot": 5}
    else:  # the coachella tweets, 3-way 8-shot
        tweets = load_corpus("tweets", data_dir)
        data = tweets.filter(lambda row: row["domain"] == "coachella")
        shape = {"n_way": 3, "k_shot": 8}
    sampler = ClassificationSampler(
        data, **shape, q_query=8, seed=11, name=setting, tokenizer=tokenizer, max_length=48
    )
    return [sampler.episode(i) for i in range(n)]


def _query_accuracy(logits, episode):
    return float((logits.argmax(-1) == episode.query["labels"]).float().mean())


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["bbc_5w5s", "coachella_3w8s"])
def test_default_policy_is_not_below_frozen_logistic_regression(data_dir, setting):
    """Issue 27 item 4 on real data: over fixed episodes, what `from_pretrained()` gives (its
    policy) is not below the frozen logistic-regression baseline (a paired 95 % interval that
    excludes 0 from below would be "below"); where the policy chose the probe its predictions
    are the baseline's, and a policy of the probe alone always equals the baseline."""
    from metanlp.baselines import FrozenLogisticRegression
    from metanlp.metrics.functional import mean_ci

    learner = MetaLearner.from_pretrained(max_length=48)
    baseline = FrozenLogisticRegression(learner.model)
    probe_only = AdaptPolicy(steps=(), baselines=("frozen-lr",))
    differences = []
    for episode in _episodes(data_dir, learner.tokenizer, setting, 3):
        lr_logits = baseline.query_logits(episode)
        logits = learner.query_logits(episode)
        differences.append(_query_accuracy(logits, episode) - _query_accuracy(lr_logits, episode))
        if learner.last_decision.choice == "frozen-lr":
            assert torch.equal(logits.argmax(-1), lr_logits.argmax(-1))
        labels = [episode.label_names[i] for i in episode.support["labels"].tolist()]
        clf = learner.adapt(episode.support_inputs, labels, policy=probe_only)
        assert clf.decision.choice == "frozen-lr"
        expected = [episode.label_names[i] for i in lr_logits.argmax(-1).tolist()]
        assert clf.predict(episode.query_inputs) == expected
    stat = mean_ci([100 * d for d in differences])
    assert stat["mean"] + stat["ci"] >= 0, (setting, differences)


def test_a_cached_prefix_is_extended_reused_or_dropped_exactly(proto_maml):
    """The policy computes the frozen layers once and every candidate starts from them: a
    prefix extended from a lower one, the pooled embedding from a prefix, and a prefix that
    ends above the trained layers (recomputed or dropped) all equal the plain computation."""
    from metanlp.meta.efficient import (
        PREFIX_KEY,
        PREFIX_LAYER_KEY,
        cache_frozen_prefix,
        layered_embed,
    )
    from metanlp.models import model_inputs

    model = proto_maml.model
    support, _ = _support(proto_maml)
    with torch.no_grad():
        plain = model.embed(**model_inputs(support))
        low = cache_frozen_prefix(model, support, 2)
        extended, fresh = cache_frozen_prefix(model, low, 5), cache_frozen_prefix(model, support, 5)
        assert extended[PREFIX_LAYER_KEY] == 5
        torch.testing.assert_close(extended[PREFIX_KEY], fresh[PREFIX_KEY], rtol=1e-5, atol=1e-5)
        lowered = cache_frozen_prefix(model, fresh, 3)  # cannot go back: recomputed from the start
        torch.testing.assert_close(
            lowered[PREFIX_KEY], cache_frozen_prefix(model, support, 3)[PREFIX_KEY]
        )
        for batch in (low, extended, lowered):
            torch.testing.assert_close(layered_embed(model, {}, batch), plain, rtol=1e-4, atol=1e-5)
    every_weight = [n for n, _ in model.named_parameters()]
    assert PREFIX_KEY not in with_frozen_prefix(proto_maml.algorithm, extended, every_weight)
    assert with_frozen_prefix(proto_maml.algorithm, low, every_weight[-10:]) is low


def test_fallback_choices(learner, proto_maml):
    """Where no fold can be held out (one example per class) the fallback decides: a plain
    encoder's default policy gives exactly the frozen logistic-regression baseline there."""
    from metanlp.meta.probe import fit_probe, probe_features

    texts, labels = TEXTS[::2], LABELS[::2]
    assert proto_maml.policy.fallback == "frozen-lr"
    clf = proto_maml.adapt(texts, labels)
    assert clf.decision.choice == "frozen-lr" and "fallback" in clf.decision.reason
    support, _ = _support(proto_maml, texts, labels)
    names = sorted(set(labels))  # _support's order; the classifier's is first-seen (the same)
    assert clf.classes_ == names
    expected = fit_probe(probe_features(proto_maml.model, support), support["labels"], 3)
    for key, value in expected.items():
        torch.testing.assert_close(clf.fast[key], value)
    assert learner.adapt(texts, labels, policy={"fallback": "adapt"}).decision.choice == "adapt"
    nothing = learner.adapt(texts, labels, policy={"fallback": "no-adaptation"}).decision
    assert nothing.choice == "no-adaptation" and nothing.finetune is None
