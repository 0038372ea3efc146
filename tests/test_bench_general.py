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
