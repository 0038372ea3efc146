"""benchmarks/bench_build.py at its smallest: `make general`'s real meta-training workload in one
and in two processes, one timed meta-step each.

The figures depend on the machine and its load, so the test checks what must hold anywhere: each
layout ran with the processes and threads it names, the speed-up column is computed against fp32
in 1 process x 1 thread, and the JSON, Markdown and PNG say where and how it was measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_build  # noqa: E402


def test_one_and_two_processes(pinned_data_dir, tmp_path):
    args = ["--data", str(pinned_data_dir), "--steps", "1", "--warmup", "0", "--precisions",
            "no", "--layouts", "1x1", "2x1", "--out", str(tmp_path), "--stem", "b"]  # fmt: skip
    result = bench_build.main(args)
    rows = result["rows"]
    assert set(rows) == {"no 1x1", "no 2x1"}
    for name, (processes, threads) in (("no 1x1", (1, 1)), ("no 2x1", (2, 1))):
        row = rows[name]
        assert (row["processes"], row["threads"], row["precision"]) == (processes, threads, "no")
        assert row["steps_timed"] == 1 and row["median_step_s"] > 0
        assert row["tasks_per_s"] == pytest.approx(2 / row["median_step_s"])  # 2 tasks a step
        base = rows["no 1x1"]["median_step_s"]
        assert row["speedup_vs_fp32_1x1"] == pytest.approx(base / row["median_step_s"])
    saved = json.loads((tmp_path / "b.json").read_text())
    assert set(saved["cpu_flags"]) >= {"avx512_bf16", "amx_bf16"}
    md = (tmp_path / "b.md").read_text()
    assert "2 x 1" in md and "x fp32 1x1" in md and "CPU flags" in md
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("setting", "meta_batch", "cores", "expected"),
    [("auto", 2, 2, 2), ("auto", 2, 1, 1), ("auto", 4, 3, 2), ("auto", 1, 8, 1), ("2", 4, 1, 2)],
)
def test_processes_for(monkeypatch, setting, meta_batch, cores, expected):
    """``--processes auto``: one per usable core (no GPU here), at most the meta-batch size and
    a divisor of it, so every process runs an equal share."""
    sys.path.insert(0, str(ROOT / "recipes"))
    import common
    import torch

    monkeypatch.setattr(common.os, "sched_getaffinity", lambda _: set(range(cores)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert common.processes_for(setting, meta_batch) == expected


@pytest.mark.parametrize("setting", ["3", "0", "two", "-2"])
def test_processes_that_do_not_divide_the_meta_batch(setting):
    sys.path.insert(0, str(ROOT / "recipes"))
    import common

    with pytest.raises(SystemExit, match="divisor of the meta-batch size"):
        common.processes_for(setting, 4)
