"""benchmarks/bench_roofline.py at its ``--smoke`` size: real MiniLM, real timings, its files.

The figures depend on the machine and its load, so the test checks what must hold anywhere: the
FLOPs were counted (and a second-order step differs from ProtoNet's), every configuration was
timed, achieved = FLOPs / time, shares of the peak are computed against the same dtype and
thread count, and the JSON, Markdown and PNG say where and how they were measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_roofline  # noqa: E402


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_smoke_run_writes_table_png_and_provenance(tmp_path, one_thread):
    result = bench_roofline.main(["--smoke", "--out", str(tmp_path)])
    rows = result["rows"]
    assert {(r["algorithm"], r["threads"], r["dtype"]) for r in rows} == {
        (a, 1, d) for a in bench_roofline.ALGORITHMS for d in bench_roofline.DTYPES
    }
    flops = {r["algorithm"]: r["flops"] for r in rows}
    assert all(f > 1e8 for f in flops.values())  # MiniLM on 2 x 16 tokens: GFLOPs, not zero
    assert flops["lora-maml"] != flops["protonet"]
    for r in rows:
        assert r["achieved_flops"] == pytest.approx(r["flops"] / r["best_s"])
        assert r["peak_flops"] == result["peaks"][r["dtype"]][1] > 0
        assert r["fraction_of_peak"] == pytest.approx(r["achieved_flops"] / r["peak_flops"])
        per_cpu = r["flops_per_cpu_s"] / result["peaks"][r["dtype"]][1]
        assert r["cpu_fraction_of_peak"] == pytest.approx(per_cpu)
        assert 0 < r["best_cpu_s"] and r["flops_per_cpu_s"] == pytest.approx(
            r["flops"] / r["best_cpu_s"]
        )
    saved = json.loads((tmp_path / "roofline_smoke.json").read_text())
    assert saved["flop_count"].startswith("torch.utils.flop_counter.FlopCounterMode")
    assert set(saved["cpu_flags"]) >= {"avx512_bf16", "amx_bf16"}
    assert "load average" in saved["load_before"]
    md = (tmp_path / "roofline_smoke.md").read_text()
    assert "--smoke" in md and "FlopCounterMode" in md and "% of peak" in md
    assert "CPU flags: avx512_bf16" in md
    assert (tmp_path / "roofline_smoke.png").read_bytes()[:4] == b"\x89PNG"


def test_trainer_comparison_and_padding_share(tmp_path, one_thread, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["--smoke", "--trainer", "--padding", "--algorithms", "protonet", "--out", str(tmp_path)]
    result = bench_roofline.main(args)
    padding = result["padding"]  # bucketing never keeps fewer positions than the real tokens
    assert 0 < padding["real_share"] <= padding["bucketed_share"] <= 1
    trainer = result["trainer"]
    assert trainer["no"]["chosen"] == "no" and trainer["auto"]["chosen"] in ("no", "bf16")
    for record in trainer.values():
        assert len(record["wall_s"]) == 1 and record["median_cpu_s"] > 0
    md = (tmp_path / "roofline_smoke.md").read_text()
    assert "Padding in the general learner" in md
    assert "mixed_precision no vs auto" in md and f"| auto | {trainer['auto']['chosen']} |" in md
