"""Classes described by their names (issue 29): parsing, meaningless names, the mixing math
(float64 against a hand computation, the learned weight's gradient against finite differences),
the API (zero-shot, descriptions, names off) on the real MiniLM, and the policy's trust."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertConfig, BertModel

from metanlp import MetaLearner
from metanlp.meta import build_algorithm
from metanlp.meta.protonet import NAME_LOG_SCALE, NAME_WEIGHT, ProtoNetConfig
from metanlp.models import FewShotModel, default_model_path
from metanlp.names import (
    NAME_IDS,
    describe_label,
    encode_label_names,
    meaningless_reason,
    name_prototypes,
    resolve_label_names,
    shot_weights,
)

f64 = torch.float64
TOPICS = ["business", "sport", "tech"]
SUPPORT = {
    "business": ["Shares fell sharply as the bank reported losses", "The firm's profits doubled"],
    "sport": ["The striker scored twice in the cup final", "She won the tennis title in Paris"],
    "tech": ["The new phone has a faster chip and camera", "Software update fixes a security flaw"],
}
QUERY = {
    "business": ["Oil prices pushed inflation to a record", "The company cut 500 jobs"],
    "sport": ["The team lost the match after extra time", "He ran the marathon in record time"],
    "tech": ["The broadband network reaches more homes", "A new games console goes on sale"],
}


@pytest.mark.parametrize(
    ("label", "descriptions", "words"),
    [
        ("card_arrival", None, "card arrival"),
        ("AddToPlaylist", None, "Add To Playlist"),
        ("sci.space", None, "sci space"),
        ("neg", {"neg": "a negative review"}, "a negative review"),
        (3, {3: "sports"}, "sports"),
    ],
    ids=["snake", "camel", "dotted", "described", "int-described"],
)
def test_labels_become_words(label, descriptions, words):
    assert describe_label(label, descriptions) == words


@pytest.mark.parametrize(
    ("name", "meaningless"),
    [
        ("LABEL_0", True), ("1", True), ("A", True), ("class_3", True), ("class 12", True),
        ("3f2a9c1b7e", True), ("0x1f2e3d", True), ("-", True),
        ("positive", False), ("sci space", False), ("Add To Playlist", False), ("B movie", False),
        ("face", False),  # hex letters only, no digit: a word
    ],
    ids=lambda v: str(v),
)  # fmt: skip
def test_meaningless_names_are_detected(name, meaningless):
    assert (meaningless_reason(name) is not None) == meaningless


def test_resolving_names_refuses_meaningless_duplicate_or_disabled_names():
    assert resolve_label_names(["pos", "neg"], None).names == ["pos", "neg"]
    off = resolve_label_names(["pos", "neg"], False)
    assert not off.used and "label_names=False" in off.reason
    numbered = resolve_label_names(["LABEL_0", "LABEL_1"], None)
    assert not numbered.used and "'LABEL_0'" in numbered.reason
    ints = resolve_label_names([0, 1], None)
    assert not ints.used and "no letters" in ints.reason
    described = resolve_label_names([0, 1], {0: "bad", 1: "good"})
    assert described.used and described.names == ["bad", "good"]
    same = resolve_label_names(["Sport", "sport"], None)
    assert not same.used and "read the same" in same.reason
    with pytest.raises(ValueError, match="empty or non-string"):
        resolve_label_names(["a b", "c d"], {"a b": ""})


def test_prototypes_mix_unit_means_and_names_as_stated():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 4, generator=g, dtype=f64)
    labels = torch.tensor([0, 1, 0, 1, 0])
    names = torch.randn(3, 4, generator=g, dtype=f64)
    w = torch.tensor([0.7, 1.3, 2.0], dtype=f64)
    got = name_prototypes(feats, labels, names, 3, w)
    unit = feats / feats.norm(dim=-1, keepdim=True)
    expected = []
    for n in range(3):
        rows = unit[labels == n]
        mean = rows.mean(0) if len(rows) else torch.zeros(4, dtype=f64)
        mixed = mean + w[n] * names[n] / names[n].norm()
        expected.append(mixed / mixed.norm())
    torch.testing.assert_close(got, torch.stack(expected))
    # Class 2 has no example: its prototype is its name (zero-shot); weight 0: the mean only.
    torch.testing.assert_close(got[2], names[2] / names[2].norm())
    torch.testing.assert_close(
        name_prototypes(feats, labels, names, 3, 0.0)[0],
        F.normalize(unit[labels == 0].mean(0), dim=0),
    )
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        name_prototypes(feats, labels, names[:2], 3, 1.0)


def test_shot_weights_index_by_count_and_clamp():
    table = torch.tensor([0.0, 1.0, 2.0])
    counts = torch.tensor([0, 2, 7])
    torch.testing.assert_close(
        shot_weights(table, counts), F.softplus(torch.tensor([0.0, 2.0, 2.0]))
    )


# ---------------------------------------------------------------- gradient of w(K), float64


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def tiny_names_algorithm(tokenizer, **options):
    """2-layer BERT of width 16 in float64 (MiniLM's vocabulary, so names can be tokenised)."""
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        vocab_size=tokenizer.vocab_size, attn_implementation="eager",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    model = FewShotModel(BertModel(config, add_pooling_layer=False).double(), pooling="mean")
    model.tokenizer = tokenizer
    algo = build_algorithm(
        "protonet", model, ProtoNetConfig(names=True, train_dropout=False, **options)
    )
    for p in algo.extra.values():
        p.data = p.data.double()
    return algo


def tiny_episode(tokenizer, k: int = 2):
    texts = {
        "sport": ["the match was won", "a goal in the final", "he ran fast"],
        "money": ["shares fell today", "the bank lost money", "prices rose"],
        "phones": ["a new phone chip", "the app crashed", "faster laptops"],
    }
    names = list(texts)

    def batch(rows):
        enc = dict(tokenizer([t for t, _ in rows], padding=True, return_tensors="pt"))
        enc["labels"] = torch.tensor([y for _, y in rows])
        return enc

    support = [(texts[n][i], y) for y, n in enumerate(names) for i in range(k)]
    query = [(texts[n][k], y) for y, n in enumerate(names)]
    return types.SimpleNamespace(
        support=batch(support), query=batch(query), n_way=3, label_names=names
    )


def test_name_weight_gradient_matches_finite_differences(tokenizer):
    algo = tiny_names_algorithm(tokenizer, name_shot_sampling=False)
    episode = tiny_episode(tokenizer)
    table = algo.extra[NAME_WEIGHT]
    with torch.no_grad():  # distinct entries, so a wrong index would show
        table.copy_(torch.linspace(-1.0, 2.0, table.numel(), dtype=f64) / algo.config.name_lr_gain)
    for p in algo.meta_parameters():
        p.grad = None
    algo.meta_backward(episode)
    analytic = table.grad.clone()

    def loss() -> float:
        support, query, n = algo.unpack(episode)
        support = algo.episode_support(episode, support)
        with torch.no_grad():
            protos = algo.prototypes(support, n)
            logits = algo.logits(algo.features(query), protos)
            return float(F.cross_entropy(logits, query["labels"]))

    eps = 1e-6 / algo.config.name_lr_gain
    numeric = torch.zeros_like(table)
    for i in range(table.numel()):
        with torch.no_grad():
            table[i] += eps
        up = loss()
        with torch.no_grad():
            table[i] -= 2 * eps
        down = loss()
        with torch.no_grad():
            table[i] += eps
        numeric[i] = (up - down) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-6)
    assert analytic[2] != 0 and analytic[[0, 1, 3]].abs().max() == 0  # K=2: only w(2) is used
    assert algo.extra[NAME_LOG_SCALE].grad is not None


def test_meta_training_samples_shots_and_encodes_the_episode_names(tokenizer):
    algo = tiny_names_algorithm(tokenizer)
    episode = tiny_episode(tokenizer, k=2)
    support, _, _ = algo.unpack(episode)
    torch.manual_seed(3)
    kept = {len(algo.episode_support(episode, support)["labels"]) for _ in range(30)}
    assert kept == {0, 3, 6}  # 0, 1 or 2 examples per class, never a ragged set
    names = algo.episode_support(episode, support)[NAME_IDS]
    expected = encode_label_names(tokenizer, episode.label_names)[NAME_IDS]
    torch.testing.assert_close(names, expected)
    with pytest.raises(ValueError, match="label_names"):
        algo.episode_support(types.SimpleNamespace(label_names=[]), support)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"name_template": "no slot"}, "exactly one"), ({"name_weight": 0}, "name_weight"),
     ({"name_scale": -1.0}, "name_scale")],
    ids=["template", "weight", "scale"],
)  # fmt: skip
def test_config_errors_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        ProtoNetConfig(names=True, **options)


# ---------------------------------------------------------------- the API on the real MiniLM


@pytest.fixture(scope="module")
def learner(single_thread):
    return MetaLearner.from_pretrained(
        algorithm="protonet", adapt="all", algorithm_config={"names": True}, device="cpu"
    )


def flat(d):
    return [t for ts in d.values() for t in ts], [y for y, ts in d.items() for _ in ts]


def test_zero_shot_classifies_by_the_names_alone(learner):
    texts, labels = flat(QUERY)
    clf = learner.zero_shot(TOPICS)
    assert clf.score(texts, labels) >= 5 / 6
    assert clf.decision.names.used and clf.decision.reason.startswith("zero-shot")
    # The same through adapt([], [], label_names=...), and by descriptions.
    same = learner.adapt([], [], label_names=TOPICS)
    torch.testing.assert_close(same.fast["prototypes"], clf.fast["prototypes"])
    described = learner.zero_shot({"b": "business and markets", "s": "sport", "t": "technology"})
    assert described.classes_ == ["b", "s", "t"]
    assert described.decision.names.names == ["business and markets", "sport", "technology"]
    with pytest.raises(ValueError, match="numbered placeholder"):
        learner.zero_shot(["LABEL_0", "LABEL_1"])


def test_meaningless_names_are_not_used_and_the_decision_says_so(learner):
    texts, labels = flat(SUPPORT)
    index = {t: f"LABEL_{i}" for i, t in enumerate(TOPICS)}
    # policy=False: the prototypes themselves (the policy may pick the frozen linear probe).
    clf = learner.adapt(texts, [index[y] for y in labels], policy=False)
    assert not clf.decision.names.used and "LABEL_0" in clf.decision.names.reason
    off = learner.adapt(texts, labels, label_names=False, policy=False)
    assert not off.decision.names.used
    # Not used = the same prototypes as with the names off.
    torch.testing.assert_close(clf.fast["prototypes"], off.fast["prototypes"])
    named = learner.adapt(texts, labels, policy=False)
    assert named.decision.names.used
    assert not torch.allclose(named.fast["prototypes"], off.fast["prototypes"])


def test_listed_classes_may_lack_examples(learner):
    texts, labels = flat({k: v for k, v in SUPPORT.items() if k != "tech"})
    clf = learner.adapt(texts, labels, label_names=TOPICS)
    assert clf.classes_ == TOPICS
    # The class without examples is its name, as in zero-shot.
    zero = learner.zero_shot(TOPICS)
    torch.testing.assert_close(clf.fast["prototypes"][2], zero.fast["prototypes"][2])
    with pytest.raises(ValueError, match="not in label_names"):
        learner.adapt(texts, labels, label_names=["sport", "tech"])


def test_a_learner_without_names_refuses_zero_shot(single_thread):
    plain = MetaLearner.from_pretrained(
        algorithm="protonet", adapt="all", algorithm_config={}, device="cpu"
    )
    with pytest.raises(ValueError, match="does not read class names"):
        plain.zero_shot(TOPICS)
    texts, labels = flat(SUPPORT)
    assert plain.adapt(texts, labels).decision.names is None


def test_the_policy_trusts_good_names_and_distrusts_permuted_ones(learner):
    texts, labels = flat(SUPPORT)
    good = learner.adapt(texts, labels, policy={"steps": (0,)})
    assert good.decision.names.used and good.decision.names.trust > 0
    assert set(good.decision.names.scores) == {f"steps=0 lr=0 names={t:g}" for t in (0, 0.5, 1, 2)}
    swap = {"business": "sport", "sport": "tech", "tech": "business"}
    bad = learner.adapt(texts, [swap[y] for y in labels], policy={"steps": (0,)})
    assert bad.decision.names.trust == 0 and not bad.decision.names.used
    # One shot: no folds; the meta-learned weight, no fine-tuning by default.
    one = learner.adapt(texts[::2], labels[::2], policy=True)
    assert (
        one.decision.names.used and one.decision.names.trust == 1 and one.decision.finetune is None
    )
    assert "names used" in one.decision.summary()


def test_names_weight_is_saved_and_loaded(learner, tmp_path):
    with torch.no_grad():
        learner.algorithm.extra[NAME_WEIGHT][3] = 0.25 / learner.algorithm.config.name_lr_gain
    learner.save_pretrained(tmp_path / "l")
    loaded = MetaLearner.from_pretrained(tmp_path / "l", device="cpu")
    assert loaded.algorithm.config.names
    torch.testing.assert_close(
        loaded.algorithm.extra[NAME_WEIGHT], learner.algorithm.extra[NAME_WEIGHT]
    )


def test_meta_training_ignores_meaningless_episode_names(tokenizer):
    algo = tiny_names_algorithm(tokenizer)
    episode = tiny_episode(tokenizer, k=2)
    episode.label_names = ["0", "1", "2"]
    support, query, n = algo.unpack(episode)
    torch.manual_seed(0)
    for _ in range(10):
        kept = algo.episode_support(episode, support)
        assert NAME_IDS not in kept and len(kept["labels"]) in (3, 6)  # never zero-shot
    algo.meta_backward(episode)  # prototypes from the examples alone


def test_names_are_for_text_classification(tokenizer):
    model = FewShotModel(BertModel(BertConfig(hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)), task="token")  # fmt: skip
    with pytest.raises(ValueError, match="text classification"):
        build_algorithm("protonet", model, ProtoNetConfig(names=True))


def test_meta_validation_and_evaluation_use_the_episode_names(learner, data_dir):
    from datasets import load_from_disk

    from metanlp.episodes import ClassificationSampler, EpisodeCollator
    from metanlp.training.validation import score_episode

    data = load_from_disk(str(data_dir / "bbc_news"))
    sampler = ClassificationSampler(
        data, n_way=3, k_shot=1, q_query=2, seed=0,
        collator=EpisodeCollator(learner.tokenizer, 64),
    )  # fmt: skip
    episode = sampler.episode(0)
    scored = score_episode(learner.algorithm, episode)
    logits = learner.query_logits(episode)
    assert learner.last_decision.names.used
    loss = float(F.cross_entropy(logits, episode.query["labels"]))
    assert scored["loss"] == pytest.approx(loss, rel=1e-5)
    learner.eval_label_names = False
    try:
        off = float(F.cross_entropy(learner.query_logits(episode), episode.query["labels"]))
    finally:
        learner.eval_label_names = None
    assert off != pytest.approx(loss, rel=1e-3)


def test_the_names_benchmark_runs_and_pairs_its_methods(tmp_path, data_dir, single_thread):
    import json

    from benchmarks import bench_names

    bench_names.main(["--data", str(data_dir), "--corpora", "coachella", "--shots", "0", "2",
                      "--episodes", "2", "--query", "2", "--max-length", "32",
                      "--results-dir", str(tmp_path), "--out", "smoke"])  # fmt: skip
    record = json.loads((tmp_path / "smoke.json").read_text())
    zero, two = record["settings"]["coachella_3w0s"], record["settings"]["coachella_3w2s"]
    assert set(zero["accuracy"]) == {"names_zero_shot", "frozen_name_similarity"}
    assert set(two["accuracy"]) == {
        "names",
        "no_names",
        "permuted",
        "meaningless",
        "frozen_lr",
        "names_zero_shot",
    }
    assert "names - no_names" in two["paired"] and (tmp_path / "smoke.md").is_file()
    # The meaningless control was detected as such in every episode.
    assert all(not d["names"]["used"] for d in two["decisions"]["meaningless"])
