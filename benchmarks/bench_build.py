"""How fast `make general` meta-trains, per numeric precision and process / thread layout
(issue 31).

The workload is exactly the general learner's meta-training (`recipes/general_learner.py`'s
`general_setup` at the default size: ProtoNet over every MiniLM weight, the real task stream of
every built corpus, 5-shot + 5 query, max length 64, 2 tasks per meta-step). Each configuration
runs in its own process(es), builds the trainer, takes ``--warmup`` meta-steps and times the next
``--steps`` (wall time of the main process; a meta-step ends with every process's gradients
all-reduced, so it is the step's time for the whole run). Configurations:

- precision: ``no`` (fp32) and ``bf16`` (autocast over fp32 master weights, as
  ``mixed_precision: bf16`` / ``auto`` runs it);
- layout: 1 process x 1 thread, 1 process x 2 intra-op threads, 2 processes x 1 thread
  (``torchrun``; each process runs one of the meta-step's 2 tasks and the meta-gradients are
  all-reduced, which gives the 1-process parameters up to float summation order,
  `tests/test_distributed.py`).

Configurations alternate within each round, so load drifts on a shared machine hit all alike.
The table gives the median seconds per meta-step, tasks per second and the speed-up over fp32
with 1 process and 1 thread (today's build), and what 300 meta-steps (`make general`) would take.

    python benchmarks/bench_build.py                 # writes results/build_speed.{json,md,png}
    python benchmarks/bench_build.py --steps 2 --warmup 1 --layouts 1x1 2x1 --precisions no
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_roofline import cpu_flags, load_average  # noqa: E402
from benchmarks.common import (  # noqa: E402
    alternating_schedule,
    markdown_table,
    median,
    provenance,
    provenance_markdown,
    run_json_worker,
    write_grouped_bars,
    write_json,
    write_markdown,
)

RESULTS = ROOT / "benchmarks" / "results"
LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}
"""name -> (processes, intra-op threads per process)."""
PRECISIONS = ("no", "bf16")
BUILD_STEPS = 300
"""Meta-steps of `make general` at the default size (`recipes/general_learner.py`)."""


def worker(args: argparse.Namespace) -> None:
    """One configuration, in this process (one of ``torchrun``'s when there are several)."""
    import torch

    sys.path.insert(0, str(ROOT / "recipes"))
    from common import leave_process_group
    from general_learner import SIZES, general_setup

    from metanlp.training import MetaTrainer

    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="bench_build_"))
    run = argparse.Namespace(
        data=args.data, out=str(out), size=SIZES["default"], seed=0, mode="hybrid",
        no_bigbench=False, names=False, device="cpu", no_progress=True,
        precision=args.precision, recipe="general_learner",
    )  # fmt: skip
    config, train, _ = general_setup(run)
    trainer = MetaTrainer(config, train_sampler=train)
    for _ in range(args.warmup):
        trainer.meta_step()
    walls, cpus = [], []
    for _ in range(args.steps):
        wall, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        trainer.meta_step()
        after = resource.getrusage(resource.RUSAGE_SELF)
        walls.append(time.perf_counter() - wall)
        cpus.append(after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime)
    leave_process_group(trainer)
    if trainer.accelerator.is_main_process:
        print(json.dumps({
            "precision": trainer.mixed_precision, "processes": trainer.world_size,
            "threads": torch.get_num_threads(), "tasks_per_step": config.meta_batch_size,
            "wall_s": walls, "cpu_s_main": cpus,
        }))  # fmt: skip


def command(layout: str, precision: str, args: argparse.Namespace) -> list[str]:
    processes, threads = LAYOUTS[layout]
    script = [str(Path(__file__).resolve()), "--worker", "--precision", precision,
              "--threads", str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--data", str(args.data)]  # fmt: skip
    if processes == 1:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(processes), *script]  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, dict]:
    from tqdm.auto import tqdm

    names = [f"{p} {layout}" for p in args.precisions for layout in args.layouts]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for _, name in tqdm(alternating_schedule(names, args.repeats), desc="configurations"):
        precision, layout = name.split()
        threads = LAYOUTS[layout][1]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
        result = run_json_worker(command(layout, precision, args), timeout_s=args.timeout, env=env)
        if result.get("status") == "failed":
            print(f"{name}: {result['error']}", file=sys.stderr)
        runs[name].append(result)
    return runs


def summarize(runs: dict[str, list[dict]]) -> dict[str, dict]:
    rows = {}
    for name, results in runs.items():
        walls = [w for r in results if "wall_s" in r for w in r["wall_s"]]
        if not walls:
            rows[name] = {"failed": [r.get("error") for r in results]}
            continue
        first = next(r for r in results if "wall_s" in r)
        step = median(walls)
        rows[name] = {
            "precision": first["precision"], "processes": first["processes"],
            "threads": first["threads"], "median_step_s": step, "steps_timed": len(walls),
            "tasks_per_s": first["tasks_per_step"] / step,
            "build_minutes": BUILD_STEPS * step / 60,
        }  # fmt: skip
    base = rows.get("no 1x1", {}).get("median_step_s")
    for row in rows.values():
        if base and "median_step_s" in row:
            row["speedup_vs_fp32_1x1"] = base / row["median_step_s"]
    return rows


def report(result: dict, out: Path, stem: str) -> None:
    rows = result["rows"]
    table = markdown_table(
        ["precision", "layout", "processes x threads", "median s / meta-step", "tasks / s",
         f"{BUILD_STEPS} meta-steps (min)", "x fp32 1x1"],
        [
            [name.split()[0], name.split()[1], f"{r.get('processes')} x {r.get('threads')}",
             r.get("median_step_s"), r.get("tasks_per_s"), r.get("build_minutes"),
             r.get("speedup_vs_fp32_1x1")] if "median_step_s" in r
            else [name.split()[0], name.split()[1], "failed", None, None, None, None]
            for name, r in rows.items()
        ],
    )  # fmt: skip
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in result["cpu_flags"].items())
    write_markdown(
        out / f"{stem}.md",
        "Meta-training speed of `make general` per precision and layout (issue 31)",
        [
            provenance_markdown(result["provenance"]),
            f"- CPU flags: {flags}  \n- Load: start `{result['load_before']}`, end "
            f"`{result['load_after']}`  \n- {result['workload']}",
            table,
        ],
    )
    write_json(out / f"{stem}.json", result)
    panel = {
        layout: {
            precision: rows.get(f"{precision} {layout}", {}).get("tasks_per_s")
            for precision in result["precisions"]
        }
        for layout in result["layouts"]
    }
    write_grouped_bars(
        out / f"{stem}.png", [("tasks / s (higher is faster)", panel)],
        "make general's meta-training: precision x (processes x threads)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("METANLP_DATA_DIR", "data"),
                        help="built corpora (make general builds them)")  # fmt: skip
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--steps", type=int, default=4, help="timed meta-steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed meta-steps first")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the result files")
    parser.add_argument("--stem", default="build_speed", help="result file name")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="no", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    load_before = load_average()
    runs = measure(args)
    result = {
        "provenance": provenance(sys.argv if argv is None else ["bench_build.py", *argv]),
        "cpu_flags": cpu_flags(),
        "load_before": load_before,
        "load_after": load_average(),
        "workload": (
            "Workload: `make general`'s meta-training at the default size (ProtoNet, every "
            "weight, 2 tasks of 5-shot + 5 query per meta-step, max length 64, the real task "
            f"stream); {args.warmup} untimed then {args.steps} timed meta-step(s) per run, "
            f"{args.repeats} run(s) per configuration, alternated"
        ),
        "precisions": args.precisions,
        "layouts": args.layouts,
        "runs": runs,
        "rows": summarize(runs),
    }
    report(result, args.out, args.stem)
    print((args.out / f"{args.stem}.md").read_text())
    return result


if __name__ == "__main__":
    main()
