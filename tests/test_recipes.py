"""Smoke test of the recipes: each one runs end to end at ``--smoke`` size, as a user runs it.

Every recipe really meta-trains MiniLM (2 meta-steps), draws fixed test episodes, scores the
methods and writes its report; the test reads what was written and checks that it is complete
and consistent (the rows the recipe promises, the episode counts asked for, metrics in range,
the saved learner and the episode files). The optional-data switches must fail fast and say
what to build when the bigbench extra is missing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE_EPISODES = 2
METHODS = {"protomaml meta-trained", "protomaml no meta-training", "frozen prototypes"}


def run_recipe(name: str, data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "recipes" / f"{name}.py"), "--data", str(data_dir),
               "--out", str(out), "--no-progress", *extra]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def check_report(out: Path, settings: list[str], metric: str, methods: set = METHODS) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert {(r["setting"], r["method"]) for r in rows} == {
        (s, m) for s in settings for m in methods
    }
    for r in rows:
        assert r[metric]["n"] == SMOKE_EPISODES
        assert 0.0 <= r[metric]["mean"] <= 1.0
    assert summary["run"]["size"] == "smoke"
    assert summary["run"]["training"]["steps"] == 2
    assert (out / "summary.png").stat().st_size > 0
    table = (out / "summary.md").read_text()
    assert all(s in table for s in settings)
    # The learner folder is what `metanlp adapt-predict` loads, the episode files what
    # `metanlp evaluate` re-scores.
    assert (out / "meta" / "learner" / "metanlp_config.json").is_file()
    episode_files = list((out / "episodes").glob("*.json"))
    assert len(episode_files) == len(settings)
    for path in episode_files:
        assert len(json.loads(path.read_text())["episodes"]) == SMOKE_EPISODES
    return summary


def per_episode_results(out: Path, folder: str) -> list[dict]:
    return json.loads((out / folder / "results.json").read_text())


@pytest.mark.parametrize(
    ("recipe", "settings", "metric"),
    [
        ("demo", ["coachella 3-way 5-shot"], "accuracy"),
        ("sentiment_domains", ["3-way 4-shot", "2-way 4-shot"], "accuracy"),
        ("ner_wnut16", ["5-way 1~2-shot (relaxed)", "5-way 5~10-shot (relaxed)"], "f1"),
    ],
    ids=["demo", "sentiment_domains", "ner_wnut16"],
)
def test_recipe_smoke(recipe, settings, metric, data_dir, tmp_path):
    done = run_recipe(recipe, data_dir, tmp_path / recipe, "--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = check_report(tmp_path / recipe, settings, metric)
    # The table's numbers are the per-episode means the evaluation harness saved.
    for row in summary["rows"]:
        saved = next(
            r for r in per_episode_results(tmp_path / recipe, row["folder"])
            if r["method"] == row["method"]
        )  # fmt: skip
        values = [e[metric] for e in saved["episodes"]]
        assert math.isclose(row[metric]["mean"], sum(values) / len(values), rel_tol=1e-9)
    # Paired rows: the first method minus each other one, episode by episode.
    assert len(summary["paired"]) == len(settings) * (len(METHODS) - 1)
    for pair in summary["paired"]:
        folder = next(r["folder"] for r in summary["rows"] if r["setting"] == pair["setting"])
        saved = per_episode_results(tmp_path / recipe, folder)
        first, other = (next(r for r in saved if r["method"] == m)
                        for m in (pair["method"], pair["minus"]))  # fmt: skip
        pairs = zip(first["episodes"], other["episodes"], strict=True)
        diffs = [a[metric] - b[metric] for a, b in pairs]
        assert math.isclose(pair["mean"], sum(diffs) / len(diffs), abs_tol=1e-12)
    # `python recipes/report.py OUT` rewrites the same summary from the saved results.
    before = (tmp_path / recipe / "summary.json").read_text()
    redo = subprocess.run([sys.executable, "recipes/report.py", str(tmp_path / recipe)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert redo.returncode == 0, redo.stderr[-2000:]
    assert json.loads((tmp_path / recipe / "summary.json").read_text()) == json.loads(before)


def test_ner_decomposed_smoke(data_dir, tmp_path):
    """The decomposed NER recipe at CI size: meta-trains, saves a learner that loads back and
    tags sentences, and scores it beside its untrained start, frozen prototypes and NNShot."""
    out = tmp_path / "ner_decomposed"
    done = run_recipe("ner_decomposed", data_dir, out, "--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    methods = {"decomposed meta-trained", "decomposed no meta-training", "frozen prototypes",
               "nnshot"}  # fmt: skip
    settings = ["3-way 1~2-shot (relaxed)", "3-way 5~10-shot (relaxed)", "4-way 1~2-shot (relaxed)"]
    check_report(out, settings, "f1", methods)
    from metanlp.api import MetaLearner

    learner = MetaLearner.from_pretrained(out / "meta" / "learner", device="cpu")
    assert learner.config.algorithm == "decomposed" and learner.config.meta_trained
    # the recipe's default typing, chosen on validation
    assert learner.algorithm.config.typing == "names"
    tagger = learner.adapt([["Ann", "sang", "Hello"]], [["B-musicartist", "O", "B-song"]])
    assert [len(t) for t in tagger.predict([["Bob", "sang", "Yesterday", "today"]])] == [4]


def test_topic_intent_smoke(data_dir, tmp_path):
    out = tmp_path / "topic_intent"
    done = run_recipe("topic_intent", data_dir, out, "--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    settings = ["BBC News 5-way 1-shot", "BBC News 5-way 5-shot"]
    snips_built = (data_dir / "bigbench" / "intent_recognition").exists()
    if snips_built:
        settings += ["SNIPS 7-way 1-shot", "SNIPS 7-way 5-shot"]
    summary = check_report(out, settings, "accuracy")
    if not snips_built:
        assert "SNIPS 7-way" in summary["run"]["skipped"]
        assert "build_bigbench.py" in summary["run"]["skipped"]["SNIPS 7-way"]


@pytest.mark.parametrize(
    ("recipe", "flag", "task"),
    [
        ("ner_wnut16", "--polish", "polish_sequence_labeling"),
        ("topic_intent", "--snips", "intent_recognition"),
    ],  # fmt: skip
    ids=["polish", "snips"],
)
def test_optional_data_fails_clearly(recipe, flag, task, data_dir, tmp_path):
    if (data_dir / "bigbench" / task).exists():
        pytest.skip(f"bigbench/{task} is built here; the missing-data error cannot be shown")
    done = run_recipe(recipe, data_dir, tmp_path / recipe, "--smoke", flag)
    assert done.returncode != 0
    assert flag in done.stderr and "bigbench" in done.stderr
    assert f"build_bigbench.py --out {data_dir} --task {task}" in done.stderr
    assert not (tmp_path / recipe / "summary.json").exists()


def test_general_learner_smoke(pinned_data_dir, tmp_path):
    """The general learner's recipe: hybrid families, held-out corpora unread, a policy learner."""
    from metanlp.api import MetaLearner
    from metanlp.general import PINNED_LABELLED
    from metanlp.meta.policy import AdaptPolicy

    out = tmp_path / "general"
    done = run_recipe("general_learner", pinned_data_dir, out, "--smoke", "--no-bigbench")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    families = summary["run"]["training"]["families"]
    assert {"tweets", "smlmt:tweets", "smlmt:wnut16"} <= set(families["probabilities"])
    assert set(families["families"]["tweets"]) == {
        "airlines", "apple", "claritin", "deflategate", "driverless_cars"
    }  # fmt: skip
    assert "tweets/domain=coachella" in families["held_out"] and "bbc_news" in families["held_out"]
    assert {"banking77", "stackoverflow"} <= set(families["held_out"])
    assert set(PINNED_LABELLED) <= set(families["meta_trained_on"]) and "missing" not in families
    assert sum(families["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    rows = {(r["setting"], r["method"]) for r in summary["rows"]}
    assert {m for _, m in rows} == {
        "general learner (prototypes)", "no meta-training (prototypes)", "frozen prototypes"
    }  # fmt: skip
    assert {s for s, _ in rows} == {
        "BANKING77 77-way 5-shot (whole test split) [smoke: 2-shot, 2 test rows per intent]"
    }
    learner = MetaLearner.from_pretrained(out / "meta" / "learner", device="cpu")
    assert learner.config.meta_trained and learner.policy == AdaptPolicy()
    assert set(PINNED_LABELLED) <= set(learner.config.datasets)  # what it was meta-trained on
    assert "clinc150" in (out / "meta" / "learner" / "README.md").read_text()  # and the card
    clf = learner.adapt(["great flight", "awful delay", "lost bag", "lovely crew"],
                        ["pos", "neg", "neg", "pos"], policy={"steps": [0, 1], "lrs": [1e-4]})  # fmt: skip
    assert clf.decision.reason == "2-fold CV on the support set"
    assert clf.predict(["what a lovely flight"])[0] in {"pos", "neg"}
