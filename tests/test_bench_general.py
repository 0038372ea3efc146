"""The held-out benchmark of the general learner (`benchmarks/bench_general.py`) end to end at a
tiny size: the real MiniLM and the real StackOverflow corpus, two episodes, the frozen
logistic-regression baseline; then two runs split by setting merged into one table."""

from __future__ import annotations

import json

from benchmarks import bench_general


def test_runs_pairs_and_merges(tmp_path, pinned_data_dir):
    common = ["--data", str(pinned_data_dir), "--episodes", "2", "--methods", "logreg", "finetune"]
    bench_general.main([*common, "--settings", "stackoverflow_5w1s", "--out", str(tmp_path),
                        "--stem", "a"])  # fmt: skip
    record = json.loads((tmp_path / "a.json").read_text())["settings"]["stackoverflow_5w1s"]
    methods = [r["method"] for r in record["results"]]
    assert methods == ["from_pretrained()", "frozen logistic regression", "fine-tune"]
    assert record["episodes"] == 2
    ours, logreg = (
        [e["accuracy"] for e in r["episodes"]] for r in record["results"][:2]
    )  # fmt: skip
    d = record["paired_accuracy_difference"]["frozen logistic regression"]
    assert d["n"] == 2 and abs(d["mean"] - (sum(ours) - sum(logreg)) / 2) < 1e-9
    # at one shot nothing can be cross-validated: a plain encoder's policy is the probe itself
    assert record["choices"]["from_pretrained()"] == ["frozen-lr", "frozen-lr"]
    assert d["mean"] == 0.0
    assert set(record["seconds_per_episode"]) == set(methods)

    b = json.loads((tmp_path / "a.json").read_text())
    b["settings"] = {"copy": b["settings"]["stackoverflow_5w1s"]}
    (tmp_path / "b.json").write_text(json.dumps(b))
    bench_general.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                        "--out", str(tmp_path), "--stem", "merged"])  # fmt: skip
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert list(merged["settings"]) == ["stackoverflow_5w1s", "copy"]
    table = (tmp_path / "merged.md").read_text()
    assert "| stackoverflow_5w1s | 2 |" in table and "| copy | 2 |" in table
    assert "− fine-tune" in table and "not run" in table  # no SetFit here: its ratio is not run


def test_against_another_build_without_policy(tmp_path, pinned_data_dir):
    """``--against`` scores another saved learner on the same episodes and ``--no-policy`` makes
    every learner adapt with its algorithm alone (issue 31: a bf16 build against an fp32 one):
    the same weights saved and loaded again give the same accuracy on every episode."""
    from metanlp.api import MetaLearner

    copy = tmp_path / "copy"
    MetaLearner.from_pretrained(device="cpu").save_pretrained(copy)
    bench_general.main(["--data", str(pinned_data_dir), "--episodes", "2", "--methods",
                        "--against", str(copy), "--no-policy", "--settings", "stackoverflow_5w5s",
                        "--out", str(tmp_path), "--stem", "ab"])  # fmt: skip
    record = json.loads((tmp_path / "ab.json").read_text())["settings"]["stackoverflow_5w5s"]
    assert [r["method"] for r in record["results"]] == ["from_pretrained()", f"learner {copy}"]
    assert record["choices"] == {
        m: ["no policy"] * 2 for m in ("from_pretrained()", f"learner {copy}")
    }
    d = record["paired_accuracy_difference"][f"learner {copy}"]
    assert d["n"] == 2 and d["mean"] == 0.0
