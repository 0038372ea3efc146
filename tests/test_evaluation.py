"""Metrics against independent references (scikit-learn, scipy, seqeval), and the evaluation
harness on real fixed episode files (BBC News, WNUT-16) with the real MiniLM."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from scipy import stats
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score

from metanlp.metrics import load_metric
from metanlp.metrics.functional import (
    accuracy,
    entity_scores,
    macro_f1,
    mean_ci,
    to_iob2,
)


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_and_macro_f1_match_sklearn(seed):
    rng = random.Random(seed)
    n_way = rng.randint(2, 6)
    refs = [rng.randrange(n_way) for _ in range(40)]
    preds = [r if rng.random() < 0.6 else rng.randrange(n_way) for r in refs]
    assert accuracy(preds, refs) == pytest.approx(np.mean(np.array(preds) == np.array(refs)))
    expected = f1_score(refs, preds, average="macro", labels=list(range(n_way)), zero_division=0)
    assert macro_f1(preds, refs, labels=range(n_way)) == pytest.approx(expected)


def test_mean_ci_matches_scipy_t_interval():
    values = [0.5, 0.7, 0.65, 0.9, 0.4, 0.55, 0.8]
    out = mean_ci(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert out["mean"] == pytest.approx(np.mean(values))
    assert out["ci"] == pytest.approx((hi - lo) / 2)
    assert out["n"] == 7
    single = mean_ci([0.3])
    assert single["mean"] == 0.3 and np.isnan(single["ci"])


IOB2_CASES = [
    (["O", "person", "person", "O"], ["O", "B-person", "I-person", "O"]),
    (["person", "loc", "loc"], ["B-person", "B-loc", "I-loc"]),
    (["I-org", "I-org", "O", "I-org"], ["B-org", "I-org", "O", "B-org"]),
    (["B-org", "B-org", "I-org"], ["B-org", "B-org", "I-org"]),  # IOB2 stays IOB2
    (["O", "O"], ["O", "O"]),
]


@pytest.mark.parametrize(
    "tags,expected", IOB2_CASES, ids=["io-run", "io-types", "iob1", "iob2", "none"]
)
def test_to_iob2(tags, expected):
    assert to_iob2(tags) == expected


def test_entity_scores_score_io_runs_as_entities():
    # One IO run = one entity. Strict IOB2 on raw IO tags would find no entity at all.
    refs = [["B-person", "I-person", "O", "B-loc"], ["O", "B-org"]]
    preds = [["person", "person", "O", "O"], ["O", "org"]]
    scores = entity_scores(preds, refs)
    assert scores == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8)}
    # The same as seqeval on hand-converted IOB2 tags.
    by_hand = [["B-person", "I-person", "O", "O"], ["O", "B-org"]]
    assert scores["f1"] == pytest.approx(seqeval_f1(refs, by_hand, mode="strict", scheme=IOB2))
    with pytest.raises(ValueError, match="Sentence 0"):
        entity_scores([["O"]], [["O", "O"]])


def test_local_evaluate_modules_match_functions():
    preds, refs = [0, 1, 1, 2, 2], [0, 1, 0, 2, 1]
    assert load_metric("accuracy").compute(predictions=preds, references=refs) == {
        "accuracy": accuracy(preds, refs)
    }
    assert load_metric("macro_f1").compute(predictions=preds, references=refs)[
        "macro_f1"
    ] == pytest.approx(macro_f1(preds, refs))
    tags_p, tags_r = [["person", "O"], ["O", "org"]], [["B-person", "O"], ["B-org", "I-org"]]
    got = load_metric("entity_f1").compute(predictions=tags_p, references=tags_r)
    assert got == pytest.approx(entity_scores(tags_p, tags_r))


# ---- the harness on real episode files ---------------------------------------------------------


class Oracle:
    """A method that returns the query labels as one-hot logits (sub-token positions for NER)."""

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong

    def query_logits(self, episode):
        labels = episode.query["labels"].clamp_min(0)
        if self.wrong:  # everything predicted as class/tag 0 ("O" for NER)
            labels = torch.zeros_like(labels)
        return torch.nn.functional.one_hot(labels, episode.num_labels).float()


@pytest.fixture(scope="module")
def model():
    from metanlp.models import FewShotModel

    torch.manual_seed(0)
    return FewShotModel.from_pretrained(pooling="mean").eval()


@pytest.fixture(scope="module")
def bbc_file(data_dir, tmp_path_factory, model):
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler, save_episodes

    bbc = load_corpus("bbc_news", data_dir)
    sampler = ClassificationSampler(bbc, n_way=3, k_shot=2, q_query=2, seed=3, name="bbc_news")
    path = tmp_path_factory.mktemp("episodes") / "bbc.json"
    save_episodes(path, sampler.specs(3), sampler, metadata={"max_length": 48})
    return path, bbc


def test_evaluate_scores_every_method_on_the_same_episodes(bbc_file, model, tmp_path):
    from metanlp.baselines import FineTuneBaseline, FrozenPrototypes
    from metanlp.evaluation import evaluate_file, load_results

    path, bbc = bbc_file
    methods = {
        "oracle": Oracle(),
        "prototypes": FrozenPrototypes(model),
        "prototypes_again": FrozenPrototypes(model),
        "finetune": FineTuneBaseline(model, steps=1),
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = evaluate_file(methods, path, bbc, model.tokenizer, n_episodes=2, output_dir=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    by_name = {r["method"]: r for r in results}
    assert by_name["oracle"]["summary"]["accuracy"] == {"mean": 1.0, "ci": 0.0, "std": 0.0, "n": 2}
    assert by_name["oracle"]["summary"]["macro_f1"]["mean"] == 1.0
    # Paired: identical methods give identical per-episode values on the identical episodes.
    assert by_name["prototypes"]["episodes"] == by_name["prototypes_again"]["episodes"]
    assert [e["index"] for e in by_name["finetune"]["episodes"]] == [0, 1]
    saved = load_results(tmp_path)
    assert [r["method"] for r in saved] == list(methods)
    assert (
        json.loads((tmp_path / "results.json").read_text())[1]["episodes"]
        == by_name["prototypes"]["episodes"]
    )
    table = (tmp_path / "comparison.md").read_text()
    assert table.startswith("| method | episodes | accuracy | macro_f1 |")
    assert "| oracle | 2 | 100.00 ± 0.00 | 100.00 ± 0.00 |" in table


def test_frozen_prototypes_equal_a_numpy_nearest_centroid(bbc_file, model):
    from metanlp.baselines import FrozenPrototypes
    from metanlp.episodes import load_episodes
    from metanlp.evaluation import episode_metrics
    from metanlp.models import model_inputs

    path, bbc = bbc_file
    episode = load_episodes(path, bbc, tokenizer=model.tokenizer)[0]
    logits = FrozenPrototypes(model).query_logits(episode)
    assert not any(m.training for m in model.modules())  # the baseline restored eval mode
    with torch.no_grad():
        # model.eval() above: no dropout, as in the baseline
        s = model.embed(**model_inputs(episode.support, "cpu")).double().numpy()
        q = model.embed(**model_inputs(episode.query, "cpu")).double().numpy()
    y = episode.support["labels"].numpy()
    centroids = np.stack([s[y == c].mean(0) for c in range(episode.n_way)])
    nearest = ((q[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert logits.argmax(-1).tolist() == nearest.tolist()
    expected = float(np.mean(nearest == np.array(episode.query_targets)))
    assert episode_metrics(episode, logits)["accuracy"] == pytest.approx(expected)


def test_frozen_logistic_regression_equals_sentence_transformers_plus_sklearn(bbc_file, model):
    """The baseline against an independent path: sentence-transformers' own encoding of the raw
    texts (mean pooling + normalisation) and scikit-learn's LogisticRegression."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from metanlp.baselines import FrozenLogisticRegression
    from metanlp.episodes import load_episodes
    from metanlp.models import default_model_path

    path, bbc = bbc_file
    episode = load_episodes(path, bbc, tokenizer=model.tokenizer, max_length=48)[0]
    logits = FrozenLogisticRegression(model).query_logits(episode)
    st = SentenceTransformer(str(default_model_path()), device="cpu")
    st.max_seq_length = 48
    s = st.encode(episode.support_inputs, normalize_embeddings=True)
    q = st.encode(episode.query_inputs, normalize_embeddings=True)
    clf = LogisticRegression(max_iter=1000).fit(s, episode.support["labels"].numpy())
    expected = clf.predict_log_proba(q)
    np.testing.assert_allclose(logits.numpy(), expected, atol=2e-3)
    assert logits.argmax(-1).tolist() == expected.argmax(-1).tolist()


def test_ner_scoring_maps_subtokens_back_to_words(data_dir, tmp_path, model):
    from metanlp.corpora import load_corpus
    from metanlp.episodes import NERSampler, save_episodes
    from metanlp.evaluation import evaluate_file

    wnut = load_corpus("wnut16", data_dir)
    sampler = NERSampler(wnut, n_way=3, k_shot=1, mode="relaxed", seed=0, name="wnut16")
    path = save_episodes(tmp_path / "wnut.json", sampler.specs(3), sampler)
    results = evaluate_file(
        {"oracle": Oracle(), "all_O": Oracle(wrong=True)},
        path,
        wnut,
        model.tokenizer,
        n_episodes=3,
        progress=False,
    )
    oracle, all_o = results
    # The oracle's first-sub-token labels, mapped back to words and converted IO -> IOB2, must
    # reproduce every reference entity exactly; predicting O everywhere finds none.
    assert oracle["summary"]["f1"]["mean"] == 1.0
    assert all_o["summary"]["recall"]["mean"] == 0.0
    assert list(oracle["summary"]) == ["f1", "precision", "recall"]


def test_comparison_table_refuses_different_episode_counts():
    from metanlp.evaluation import comparison_table

    a = {"method": "a", "summary": {"accuracy": {"mean": 0.5, "ci": 0.1, "n": 10}}}
    b = {"method": "b", "summary": {"accuracy": {"mean": 0.5, "ci": 0.1, "n": 9}}}
    with pytest.raises(ValueError, match="same episodes"):
        comparison_table([a, b])


def test_default_episode_count():
    from metanlp.evaluation import CPU_EPISODES, GPU_EPISODES, default_episode_count

    assert default_episode_count("cpu") == CPU_EPISODES < GPU_EPISODES == 600
    assert default_episode_count("cuda") == 600


class OracleAlgorithm:
    """The `score_episode` interface (adapt, predict_logits) answering with the query labels."""

    def __init__(self, episode, wrong: bool = False) -> None:
        self.oracle, self.episode = Oracle(wrong=wrong), episode

    def adapt(self, support, n_labels):
        return None

    def predict_logits(self, fast, batch, n_labels):
        return self.oracle.query_logits(self.episode)


def test_ner_validation_reports_entity_f1(data_dir, model):
    """Meta-validation scores NER episodes on entities too, so `metric_for_best: f1` can work."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import NERSampler
    from metanlp.training.validation import score_episode

    wnut = load_corpus("wnut16", data_dir)
    sampler = NERSampler(wnut, n_way=3, k_shot=1, mode="relaxed", seed=0, name="wnut16",
                         tokenizer=model.tokenizer, max_length=48)  # fmt: skip
    episode = sampler.episode(0)
    right = score_episode(OracleAlgorithm(episode), episode)
    wrong = score_episode(OracleAlgorithm(episode, wrong=True), episode)
    assert right["f1"] == 1.0 and right["accuracy"] == 1.0
    # All-O is right on most tokens but finds no entity: token accuracy hides what F1 shows.
    assert wrong["recall"] == 0.0 and wrong["f1"] == 0.0 and wrong["accuracy"] > 0.5


def test_paired_difference_matches_scipy_paired_t_interval():
    """Per-episode differences on shared indices; the interval is scipy's paired-t interval."""
    from metanlp.evaluation import paired_difference, paired_table

    rng = np.random.default_rng(0)
    a_vals, b_vals = rng.uniform(0.4, 0.9, 12), rng.uniform(0.3, 0.8, 12)
    a = {"method": "a", "episodes": [{"index": i, "accuracy": v} for i, v in enumerate(a_vals)]}
    # b misses episode 0 and has an extra episode 99 that a never saw: both are left out.
    b_eps = [{"index": i, "accuracy": v} for i, v in enumerate(b_vals)][1:]
    b = {"method": "b", "episodes": b_eps + [{"index": 99, "accuracy": 0.0}]}
    got = paired_difference(a, b, "accuracy")
    diffs = a_vals[1:] - b_vals[1:]
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert got["n"] == 11
    assert got["mean"] == pytest.approx(diffs.mean())
    assert got["ci"] == pytest.approx((hi - lo) / 2)
    assert paired_difference(a, {"method": "c", "episodes": [{"index": 50, "accuracy": 1}]},
                             "accuracy") is None  # fmt: skip
    table = paired_table([a, b], "accuracy")
    significant = lo > 0 or hi < 0
    assert ("| significant |" in table) == significant


def test_pairing_refuses_results_scored_on_different_episode_contents():
    """Results merged from runs on different corpus builds share episode indices but not texts;
    pairing them would compare different tasks, so it is refused (older results without the
    content hash still pair by index)."""
    from metanlp.evaluation import paired_difference

    def result(method, contents, accs):
        episodes = [{"index": i, "task": "t", "accuracy": a, **({"content": c} if c else {})}
                    for i, (c, a) in enumerate(zip(contents, accs, strict=True))]  # fmt: skip
        return {"method": method, "episodes": episodes}

    a = result("general", ["x0", "x1", "x2"], [0.9, 0.8, 0.7])
    same = result("setfit", ["x0", "x1", "x2"], [0.8, 0.8, 0.6])
    assert paired_difference(a, same, "accuracy")["n"] == 3
    other = result("setfit", ["x0", "y1", "x2"], [0.8, 0.8, 0.6])
    with pytest.raises(ValueError, match=r"different episodes under the same indices \[1\]"):
        paired_difference(a, other, "accuracy")
    legacy = result("setfit", [None, None, None], [0.8, 0.8, 0.6])
    assert paired_difference(a, legacy, "accuracy")["n"] == 3
