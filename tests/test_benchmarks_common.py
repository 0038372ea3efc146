"""Fast tests of the benchmark helpers (benchmarks/common.py and the episode files of the workload).

No model is loaded here; the benchmarks themselves are exercised by running them (README).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from benchmarks.peers.workload import BenchEpisode, load_episodes, save_episodes  # noqa: E402

MIB = 2**20


def test_alternating_schedule_rotates_and_covers_each_name_once_per_repeat():
    sched = common.alternating_schedule(["a", "b", "c"], 4)
    by_repeat = [[n for r, n in sched if r == k] for k in range(4)]
    assert by_repeat == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    firsts = {order[0] for order in by_repeat[:3]}
    assert firsts == {"a", "b", "c"}
    with pytest.raises(ValueError, match="repeats=0"):
        common.alternating_schedule(["a"], 0)


@pytest.mark.parametrize(
    "values, expected",
    [([3.0, 1.0, 2.0], 2.0), ([4.0, 1.0, 2.0, 3.0], 2.5), ([float("nan"), 5.0, None], 5.0)],
    ids=["odd", "even", "skips-nan-and-none"],
)
def test_median(values, expected):
    assert common.median(values) == expected


def test_median_of_nothing_is_nan_and_ratio_handles_missing():
    assert math.isnan(common.median([]))
    assert common.ratio(1.0, 4.0) == 0.25
    assert common.ratio(None, 1.0) is None and common.ratio(1.0, 0.0) is None
    assert common.ratio(float("nan"), 1.0) is None


def test_gradient_difference_matches_hand_computation():
    ref = {"a": torch.tensor([3.0, 4.0]), "b": torch.zeros(2, 2)}
    got = {"a": torch.tensor([3.0, 4.5]), "b": torch.zeros(2, 2)}
    d = common.gradient_difference(got, ref)
    assert d["max_abs"] == pytest.approx(0.5)
    assert d["rel"] == pytest.approx(0.5 / 5.0)  # ‖Δ‖ / ‖ref‖ over all tensors
    assert d["max_rel_tensor"] == pytest.approx(0.1)
    assert common.gradient_difference(ref, ref) == {
        "max_abs": 0.0,
        "rel": 0.0,
        "max_rel_tensor": 0.0,
    }
    # A difference where the reference tensor is zero is infinitely relative, not hidden.
    got_b = {"a": ref["a"], "b": torch.ones(2, 2)}
    assert common.gradient_difference(got_b, ref)["max_rel_tensor"] == math.inf


def test_gradient_difference_rejects_mismatched_tensors():
    with pytest.raises(ValueError, match="only in the first \\['c'\\]"):
        common.gradient_difference({"a": torch.ones(1), "c": torch.ones(1)}, {"a": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        common.gradient_difference({"a": torch.ones(2)}, {"a": torch.ones(3)})


def _alloc(mib: int) -> list[str]:
    # Touch every page so the memory is resident, then report success.
    return [
        sys.executable,
        "-c",
        f"b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); print('ok')",
    ]


def test_run_isolated_measures_each_child_alone():
    big = common.run_isolated(_alloc(300))
    small = common.run_isolated(_alloc(10))
    assert big.returncode == 0 and big.stdout.strip() == "ok"
    assert big.peak_rss_bytes >= 300 * MIB
    # Not a maximum over all children so far (RUSAGE_CHILDREN would report >= 300 MiB here).
    assert small.peak_rss_bytes < 150 * MIB
    assert big.wall_s > 0 and not big.timed_out


def test_run_isolated_reports_failure_and_timeout():
    bad = common.run_isolated(
        [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
    )
    assert bad.returncode == 3 and bad.stderr == "boom"
    slow = common.run_isolated([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert slow.timed_out and slow.returncode != 0 and slow.wall_s < 20


def test_run_json_worker_returns_the_last_line_or_a_failure_saying_why():
    code = "import json; print('loading...'); print(json.dumps({'status': 'ok', 'x': 2}))"
    ok = common.run_json_worker([sys.executable, "-c", code])
    assert ok["status"] == "ok" and ok["x"] == 2 and ok["process_wall_s"] > 0
    died = common.run_json_worker(
        [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]
    )
    assert died["status"] == "failed" and "exit code 3" in died["error"]
    assert died["error"].endswith("boom") and "process_peak_rss_bytes" in died
    no_json = common.run_json_worker([sys.executable, "-c", "print('not json')"])
    assert no_json["status"] == "failed" and "exit code 0" in no_json["error"]


def test_peak_rss_reset_forgets_earlier_peaks():
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from benchmarks.common import peak_rss_bytes, reset_peak_rss, current_rss_bytes\n"
        "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); del b\n"
        "before = peak_rss_bytes(); ok = reset_peak_rss(); after = peak_rss_bytes()\n"
        "print(before, after, int(ok), current_rss_bytes())\n"
    )
    run = common.run_isolated([sys.executable, "-c", code])
    assert run.returncode == 0, run.stderr
    before, after, ok, now = (int(x) for x in run.stdout.split())
    assert before >= 300 * MIB
    if ok:  # Linux clear_refs: the peak restarts from the current resident size
        assert after < before - 200 * MIB and after >= now * 0.5


def test_result_files(tmp_path):
    p = common.write_json(
        tmp_path / "x" / "r.json", {"a": float("nan"), "b": [1.5, math.inf], "c": torch.tensor(2.0)}
    )
    assert json.loads(p.read_text()) == {"a": None, "b": [1.5, None], "c": 2.0}
    table = common.markdown_table(["name", "value"], [["x|y", 0.000123], ["z", None], ["w", 12.5]])
    assert table.splitlines()[2] == "| x\\|y | 1.23e-04 |"
    assert table.splitlines()[3] == "| z | - |" and table.splitlines()[4] == "| w | 12.5 |"
    with pytest.raises(ValueError, match="has 1 cells; the header has 2"):
        common.markdown_table(["a", "b"], [["only one"]])
    md = common.write_markdown(tmp_path / "r.md", "Title", ["one", "two"])
    assert md.read_text() == "# Title\n\none\n\ntwo\n"
    png = common.write_grouped_bars(
        tmp_path / "r.png",
        [("seconds", {"case1": {"a": 1.0, "b": None}, "case2": {"a": 2.0, "b": 3.0}})],
        "title",
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_provenance_records_machine_versions_command_and_date():
    prov = common.provenance(["bench.py", "--quick"], packages=["torch", "no-such-package-xyz"])
    assert prov["command"].endswith("bench.py --quick")
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert prov["versions"]["no-such-package-xyz"] is None
    assert prov["machine"]["cores"] >= 1 and prov["date"][:2] == "20"
    md = common.provenance_markdown(prov)
    assert "bench.py --quick" in md and "torch" in md


def test_workload_episode_files_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)

    def part(n: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.randint(0, 30522, (n, 8), generator=g),
            "attention_mask": torch.ones(n, 8, dtype=torch.long),
            "labels": torch.randint(0, 3, (n,), generator=g),
        }

    episodes = [BenchEpisode(part(6), part(9), 3), BenchEpisode(part(6), part(9), 2)]
    save_episodes(tmp_path / "e.safetensors", episodes)
    back = load_episodes(tmp_path / "e.safetensors")
    assert [e.n_way for e in back] == [3, 2]
    for a, b in zip(episodes, back, strict=True):
        for which in ("support", "query"):
            assert set(getattr(a, which)) == set(getattr(b, which))
            for k, v in getattr(a, which).items():
                assert torch.equal(v, getattr(b, which)[k])
