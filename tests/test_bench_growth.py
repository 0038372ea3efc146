"""The arithmetic of the cost-growth benchmark (benchmarks/growth_report.py) on given numbers.

No model is loaded and nothing is timed: the benchmark itself is exercised by running it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.growth_report import (  # noqa: E402
    floor_seconds,
    growth_paragraph,
    memory_growth,
    summarize,
    write_reports,
)

BASE = {"n_way": 5, "shots": 5, "queries": 5, "seq": 64, "meta_batch": 4, "steps": 5}


def _run(point: str, algo: str, cpu: float, fb_support: float, fb_query: float, peak: float):
    fb = {"support": {"cpu_s": fb_support, "wall_s": 2 * fb_support},
          "query": {"cpu_s": fb_query, "wall_s": 2 * fb_query}}  # fmt: skip
    return {"point": point, "algo": algo, "status": "ok", "cpu_s": cpu, "wall_s": 2 * cpu,
            "peak_above_model_mb": peak, "floor": fb, "repeat": 0}  # fmt: skip


def test_floor_is_k_support_passes_and_one_query_pass_per_task():
    assert floor_seconds(5, 4, fb_support_s=1.0, fb_query_s=1.0) == 24.0  # (k + 1) x B x fb
    assert floor_seconds(10, 1, fb_support_s=0.5, fb_query_s=2.0) == 7.0
    assert floor_seconds(0, 2, fb_support_s=3.0, fb_query_s=1.0) == 2.0
    with pytest.raises(ValueError, match="meta_batch=0"):
        floor_seconds(1, 0, 1.0, 1.0)


def test_floor_ratio_pairs_each_meta_step_with_the_floor_of_its_own_process():
    # Process A: 48 s over a floor of 4 x (5 x 1 + 1) = 24 s -> 2.0; process B: 30 s over 12 s
    # -> 2.5. The median of the pairs is 2.25; a ratio of medians would give 39 / 18 = 2.17.
    runs = [_run("p", "maml", 48.0, 1.0, 1.0, 900.0), _run("p", "maml", 30.0, 0.5, 0.5, 1100.0)]
    (row,) = summarize(runs, {"p": BASE})
    assert row["floor_ratio_cpu"] == pytest.approx(2.25)
    assert row["floor_ratio_wall"] == pytest.approx(2.25)
    assert row["cpu_s"] == pytest.approx(39.0) and row["floor_cpu_s"] == pytest.approx(18.0)
    assert row["peak_mb"] == pytest.approx(1000.0) and row["ok_runs"] == 2


def _steps_rows(peaks: dict[str, tuple[float, float]]) -> list[dict]:
    runs, points = [], {}
    for k, i in ((1, 0), (10, 1)):
        points[f"k{k}"] = {**BASE, "steps": k}
        runs += [_run(f"k{k}", algo, 1.0, 0.1, 0.1, pk[i]) for algo, pk in peaks.items()]
    return summarize(runs, points)


def test_memory_growth_and_its_paragraph_say_what_ckpt_and_imaml_take_off():
    rows = _steps_rows(
        {"maml": (500.0, 2300.0), "maml-ckpt": (400.0, 490.0), "imaml": (300.0, 300.0)}
    )
    growth = memory_growth(rows, BASE)
    assert growth["maml"]["growth_mb"] == 1800.0 and growth["maml"]["mb_per_step"] == 200.0
    assert growth["maml-ckpt"]["reduction_vs_maml"] == pytest.approx(0.95)
    assert growth["imaml"]["reduction_vs_maml"] == pytest.approx(1.0)
    assert growth["maml"]["reduction_vs_maml"] is None
    text = growth_paragraph(growth)
    assert "From 1 to 10 inner steps" in text and "grows by 1800 MB (500 -> 2300 MB" in text
    assert "95 % less growth" in text and "100 % less growth" in text


def test_report_keeps_a_failed_point_visible(tmp_path):
    runs = [_run("k1", "maml", 1.0, 0.1, 0.1, 100.0),
            {"point": "k10", "algo": "maml", "status": "failed", "repeat": 0,
             "error": "worker process gave no result (killed by SIGKILL)"}]  # fmt: skip
    points = {"k1": {**BASE, "steps": 1}, "k10": {**BASE, "steps": 10}}
    rows = summarize(runs, points)
    meta = {"base": BASE, "axes": {"steps": [1, 10]}, "algos": {"maml": {"algorithm": "maml"}},
            "inner_lr": 0.01, "threads": 1, "repeats": 1, "date": "d", "command": "c"}  # fmt: skip
    write_reports(tmp_path / "g", meta, rows, runs)
    md = (tmp_path / "g.md").read_text()
    assert "| 10 | MAML, 2nd order | - |" in md and "killed by SIGKILL" in md
    assert (tmp_path / "g.png").stat().st_size > 0
