"""The accuracy benchmark's own logic, checkable without the benchmark venv or any training.

- The held-out split is real: no test domain / entity type appears in the meta-training config.
- Test episode files are a pure function of the data and the seed (rewriting gives the same file),
  and a setting's episodes have the promised shape.
- Verdicts: disjoint intervals, overlap, and the paired difference, against hand-computed values.
- SetFit stays out of the package: the runner module imports without SetFit installed.
"""

from __future__ import annotations

import importlib
import math
import sys

import pytest

from benchmarks import accuracy_setup as setup
from benchmarks.accuracy_report import compare, verdicts


def _result(method: str, values: list[float], kind: str = "classification") -> dict:
    from metanlp.metrics.functional import mean_ci

    metric = "f1" if kind == "ner" else "accuracy"
    return {
        "method": method,
        "kind": kind,
        "summary": {metric: mean_ci(values)},
        "episodes": [{"index": i, metric: v} for i, v in enumerate(values)],
        "seconds": 1.0,
    }


def test_held_out_data_never_in_meta_training():
    text = setup.training_config(setup.VARIANTS["maml"], "text", steps=3)
    groups = {g for source in text["data"]["train"] for g in source.get("groups", [])}
    assert groups, "the default config should name its training domains"
    assert setup.HELD_OUT_DOMAIN not in groups
    assert all(s["dataset"] == "tweets" for s in text["data"]["train"])  # BBC never trained on
    ner = setup.training_config(setup.VARIANTS["maml"], "ner", steps=3)
    train_types = set(ner["data"]["train"][0]["types"])
    test_types = set(setup.SETTINGS["wnut_ner_3w1s"].sampler["types"])
    assert train_types and test_types and not train_types & test_types


def test_short_runs_skip_validation_long_runs_keep_it():
    short = setup.training_config(setup.VARIANTS["fomaml"], "text", steps=5)
    long = setup.training_config(setup.VARIANTS["fomaml"], "text", steps=setup.VALIDATE_FROM_STEPS)
    assert short["data"]["val"] is None and short["keep_best"] is False
    assert long["data"]["val"] is not None and long["keep_best"] is True


def test_episode_file_is_deterministic_and_shaped(tmp_path, monkeypatch, data_dir):
    from transformers import AutoTokenizer

    from metanlp.models import default_model_path

    setting = setup.SETTINGS["tweets_3w4s"]
    monkeypatch.setattr(setup, "FULL_EPISODES", 12)  # the real files hold 600; same sampler
    monkeypatch.setattr(setup, "EPISODE_DIR", tmp_path / "a")
    first = setup.episode_file(setting, str(data_dir)).read_text()
    monkeypatch.setattr(setup, "EPISODE_DIR", tmp_path / "b")
    assert setup.episode_file(setting, str(data_dir)).read_text() == first
    episodes = setup.load_setting_episodes(
        setting, AutoTokenizer.from_pretrained(default_model_path()), 2, str(data_dir)
    )
    assert len(episodes) == 2
    for e in episodes:
        assert e.task == f"tweets/domain={setup.HELD_OUT_DOMAIN}"
        assert e.n_way == 3 and sorted(e.support_targets) == sorted([0, 1, 2] * 4)
        assert len(e.query_targets) == 3 * setting.sampler["q_query"]
        assert e.support["input_ids"].shape[1] <= setting.max_length


def test_compare_disjoint_overlap_and_paired():
    high = _result("protomaml", [0.90, 0.92, 0.94, 0.96])
    low = _result("setfit", [0.50, 0.52, 0.54])
    c = compare(high, low, "accuracy")
    assert c["verdict"] == "above (CIs disjoint)"
    # Paired on the 3 shared episodes: differences 0.40 each, so mean 0.40 and zero spread.
    assert c["paired_diff"]["n"] == 3
    assert math.isclose(c["paired_diff"]["mean"], 0.40, abs_tol=1e-12)
    assert math.isclose(c["paired_diff"]["ci"], 0.0, abs_tol=1e-12)
    assert compare(low, high, "accuracy")["verdict"] == "below (CIs disjoint)"
    noisy = _result("finetune", [0.2, 1.0, 0.6, 0.9])
    assert compare(high, noisy, "accuracy")["verdict"] == "above, CIs overlap"


def test_verdicts_pick_best_metanlp_variant_not_a_baseline():
    entry = {
        "results": [
            _result("maml", [0.6, 0.7]),
            _result("protonet", [0.8, 0.9]),
            _result("frozen_protos", [0.95, 0.97]),  # a baseline is never "best metanlp"
            _result("finetune", [0.5, 0.6]),
        ]
    }
    v = verdicts(entry)
    assert v["best"] == "protonet" and v["metric"] == "accuracy"
    assert v["finetune"]["other"] == "finetune" and "setfit" not in v
    assert v["frozen_protos"]["verdict"].startswith("below")


def test_fine_tuned_variants_count_as_metanlp():
    from benchmarks.accuracy_report import _label
    from benchmarks.bench_accuracy import parse_args

    entry = {"results": [_result("protomaml", [0.6, 0.7]), _result("protomaml+ft", [0.8, 0.9]),
                         _result("finetune", [0.85, 0.88])]}  # fmt: skip
    assert verdicts(entry)["best"] == "protomaml+ft"
    assert setup.variant_of("protomaml+ft") == "protomaml" and setup.variant_of("finetune") is None
    assert _label("anil+ft") == "metanlp anil + test-time fine-tune"
    assert parse_args(["--methods", "protonet+ft", "finetune"]).methods == [
        "protonet+ft",
        "finetune",
    ]
    with pytest.raises(SystemExit):
        parse_args(["--methods", "finetune+ft"])


def test_setfit_runner_imports_without_setfit(monkeypatch):
    monkeypatch.setitem(sys.modules, "setfit", None)  # as if SetFit were not installed
    module = importlib.reload(importlib.import_module("benchmarks.peers.setfit_runner"))
    runner = module.SetFitMethod(max_length=32)
    assert runner.model_path.is_dir() and runner.max_length == 32
    with pytest.raises(ImportError):
        runner.describe()


def test_merge_runs_that_split_methods_and_settings():
    from benchmarks.accuracy_report import merge_records

    def record(cmd: str, settings: list[dict], methods: list[str]) -> dict:
        config = {"episodes": 4, "setfit_episodes": 1, "methods": methods, "train_steps": 20,
                  "learner": ["maml=/saved"] if cmd == "a" else None}  # fmt: skip
        return {"provenance": {"command": cmd}, "size": "default", "config": config,
                "variants": {}, "train_seconds": {cmd: 1.0}, "settings": settings}  # fmt: skip

    old_maml = _result("maml", [0.1, 0.2])
    a = record("a", [{"setting": "s1", "results": [old_maml, _result("finetune", [0.5, 0.6])],
                      "seconds": 2.0}], ["maml", "finetune"])  # fmt: skip
    new_maml = _result("maml", [0.7, 0.8])
    b = record("b", [{"setting": "s1", "results": [new_maml], "seconds": 3.0},
                     {"setting": "s2", "results": [_result("setfit", [0.4, 0.5])]}], ["maml"])  # fmt: skip
    merged = merge_records([a, b])
    s1, s2 = merged["settings"]
    assert [r["method"] for r in s1["results"]] == ["maml", "finetune"]
    assert s1["results"][0] is new_maml  # the later run wins for a method run twice
    assert s1["seconds"] == 5.0 and s2["setting"] == "s2"
    assert [p["command"] for p in merged["merged_from"]] == ["a", "b"]
    assert merged["train_seconds"] == {"a": 1.0, "b": 1.0}
    # A learner given to any run (--learner) is named, not reported as trained here.
    from benchmarks.accuracy_report import _training

    assert merged["config"]["learner"] == ["maml=/saved"]
    assert "`maml=/saved` (not trained here)" in _training(merged["config"])
    assert _training({"train_steps": 20}) == "20 meta-training steps per variant trained here"


def test_merge_adds_up_disjoint_episode_ranges():
    from benchmarks.accuracy_report import merge_records
    from metanlp.metrics.functional import mean_ci

    first, second = _result("setfit", [0.5, 0.7]), _result("setfit", [0.2, 0.4])
    for e in second["episodes"]:
        e["index"] += 2  # a run started with --first-episode 2
    records = [
        {"provenance": {}, "size": "default", "variants": {}, "train_seconds": {},
         "config": {"episodes": 4, "setfit_episodes": 2, "methods": ["setfit"]},
         "settings": [{"setting": "s", "results": [r]}]}
        for r in (first, second)
    ]  # fmt: skip
    (joined,) = merge_records(records)["settings"][0]["results"]
    assert [e["index"] for e in joined["episodes"]] == [0, 1, 2, 3]
    assert joined["summary"]["accuracy"] == mean_ci([0.5, 0.7, 0.2, 0.4])
    assert joined["seconds"] == 2.0


def test_policy_validation_never_reads_a_held_out_corpus():
    from benchmarks import policy_validation as pv
    from metanlp.general import HELD_OUT, HELD_OUT_TWEET_DOMAINS

    test_corpora = {s.corpus for s in setup.SETTINGS.values()} | set(HELD_OUT)
    held_domains = {setup.HELD_OUT_DOMAIN, *HELD_OUT_TWEET_DOMAINS}
    for name, (corpus, options, _) in pv.VALIDATION.items():
        if corpus == "tweets":  # the tweet test settings read one domain only
            assert options["groups"] and not set(options["groups"]) & held_domains, name
        else:
            assert corpus not in test_corpora, name
    assert all(pv.candidate_policy(name) for name in pv.CANDIDATES)  # every candidate is valid
