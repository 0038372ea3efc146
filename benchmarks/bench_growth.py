"""How the cost of a meta-step grows with inner steps, meta-batch and length, and its floor ratio.

Workload (the default size, the benchmarks issue's): MiniLM with its real weights
(`benchmarks.peers.workload.build_model`: `FewShotModel`, eager attention, mean pooling),
LoRA r=8 on query and value + the head adapted, 5-way 5-shot + 5 query per class, random token
ids (a quarter of each row padded), 5 inner SGD steps at 0.01, meta-batch 4, seq len 64, dropout
off. One axis varies at a time around that base point: inner steps 1/2/5/10, meta-batch 1/2/4/8,
seq len 32/64/128. Algorithms: `maml` (second order), `maml` with per-step checkpointing,
`fomaml` (first order) and `imaml` (5 CG steps, lambda 1), each through `build_algorithm` and
`meta_backward_batch` as the trainer calls them.

Every (point, algorithm, repeat) runs in its own process, which loads the model, measures one
plain forward+backward of the same model on an episode's support and query batches (the floor
unit), takes a warm-up meta-step (1 task, 1 inner step), then times one meta-step: CPU and wall
seconds, and peak resident memory above the process's memory once the model, the episodes and
the algorithm are built. The ratio to the floor is meta-step time / (meta-batch x (k x fb on the
support + fb on the query)), i.e. (k + 1) x fb per task when support and query are the same size.

    .venv/bin/python benchmarks/bench_growth.py --quick --out /tmp/growth_quick   # ~3 min
    .venv/bin/python benchmarks/bench_growth.py                                    # the default
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    alternating_schedule,
    current_rss_bytes,
    median,
    peak_rss_bytes,
    provenance,
    reset_peak_rss,
    run_json_worker,
    write_json,
)
from benchmarks.growth_report import summarize, write_reports  # noqa: E402

MIB = 2**20
INNER_LR = 0.01
# name -> (registered algorithm, config overrides)
ALGOS: dict[str, tuple[str, dict]] = {
    "maml": ("maml", {}),
    "maml-ckpt": ("maml", {"checkpointing": "steps"}),
    "fomaml": ("fomaml", {}),
    "imaml": ("imaml", {"lam": 1.0, "cg_steps": 5}),
}
AXES = {"steps": "inner steps", "meta_batch": "meta-batch", "seq": "seq len"}
SIZES = {
    "default": {
        "base": {"n_way": 5, "shots": 5, "queries": 5, "seq": 64, "meta_batch": 4, "steps": 5},
        "axes": {"steps": [1, 2, 5, 10], "meta_batch": [1, 2, 4, 8], "seq": [32, 64, 128]},
    },
    "quick": {
        "base": {"n_way": 2, "shots": 1, "queries": 1, "seq": 16, "meta_batch": 1, "steps": 1},
        "axes": {"steps": [1, 2], "meta_batch": [1, 2], "seq": [16, 32]},
    },
}


def point_key(point: dict) -> str:
    """A readable id of a point, e.g. ``k5-b4-s64``."""
    return f"k{point['steps']}-b{point['meta_batch']}-s{point['seq']}"


def plan_points(size: dict, axes: list[str]) -> dict[str, dict]:
    """The distinct points the chosen axes visit (the base point is measured once for all)."""
    points: dict[str, dict] = {}
    for axis in axes:
        for value in size["axes"][axis]:
            point = {**size["base"], axis: value}
            points.setdefault(point_key(point), point)
    return points


def plain_forward_backward(model, batch: dict, n_way: int, repeats: int = 3) -> dict:
    """Median CPU and wall seconds of one plain forward+backward (the adapted tensors' grads)."""
    import torch

    from benchmarks.peers.workload import model_inputs, zero_grads
    from metanlp.meta import task_loss

    params = [p for p in model.parameters() if p.requires_grad]
    walls, cpus = [], []
    for _ in range(repeats):
        zero_grads(model)
        wall, cpu = time.perf_counter(), time.process_time()
        loss = task_loss(model(**model_inputs(batch, n_way)), batch["labels"])
        torch.autograd.backward(loss, inputs=params)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    zero_grads(model)
    return {"wall_s": median(walls), "cpu_s": median(cpus)}


def worker(spec: dict) -> dict:
    """One process: build everything, measure the floor unit, warm up, time one meta-step."""
    import torch

    from benchmarks.peers.workload import CASES, build_model, random_token_episodes, zero_grads
    from metanlp.meta import build_algorithm

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    p = spec["point"]
    model = build_model(CASES["lora_so"], p["n_way"])
    episodes = random_token_episodes(
        p["n_way"], p["shots"], p["queries"], p["seq"], count=p["meta_batch"]
    )
    name, overrides = ALGOS[spec["algo"]]
    config = {"params": "lora", "inner_steps": p["steps"], "inner_lr": INNER_LR,
              "train_dropout": False, **overrides}  # fmt: skip
    algo = build_algorithm(name, model, config)
    gc.collect()
    model_rss = current_rss_bytes() or 0
    floor = {part: plain_forward_backward(model, getattr(episodes[0], part), p["n_way"])
             for part in ("support", "query")}  # fmt: skip
    build_algorithm(name, model, {**config, "inner_steps": 1}).meta_backward(episodes[0])
    zero_grads(model)
    gc.collect()
    rss_before = current_rss_bytes() or 0
    peak_reset = reset_peak_rss()  # else the peak counts from start-up (still >= the step's)
    wall, cpu = time.perf_counter(), time.process_time()
    algo.meta_backward_batch(episodes, scale=1.0 / len(episodes))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "status": "ok", "wall_s": wall, "cpu_s": cpu,
        "peak_above_model_mb": (peak_rss_bytes() - model_rss) / MIB,
        "model_rss_mb": model_rss / MIB, "rss_before_step_mb": rss_before / MIB,
        "peak_reset": peak_reset, "floor": floor, "config": algo.config.to_dict(),
    }  # fmt: skip


def run_all(args: argparse.Namespace, points: dict[str, dict]) -> list[dict]:
    from tqdm import tqdm

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    jobs = [f"{key}|{algo}" for key in points for algo in args.algos]
    runs = []
    bar = tqdm(alternating_schedule(jobs, args.repeats), unit="process", dynamic_ncols=True)
    for repeat, job in bar:
        key, algo = job.split("|")
        bar.set_description(f"{algo} {key}")
        spec = {"point": points[key], "algo": algo, "threads": args.threads}
        cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
        result = run_json_worker(cmd, timeout_s=args.timeout, env=env, cwd=ROOT)
        result.update(point=key, algo=algo, repeat=repeat)
        runs.append(result)
        if result["status"] == "ok":
            bar.write(f"{algo:9s} {key:12s} cpu {result['cpu_s']:7.2f} s  wall "
                      f"{result['wall_s']:7.2f} s  peak +{result['peak_above_model_mb']:6.0f} MB")  # fmt: skip
        else:
            bar.write(f"{algo:9s} {key:12s} FAILED: {result['error'][:200]}")
    return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke size: 2-way 1-shot, seq 16")
    p.add_argument("--axes", nargs="+", choices=list(AXES), default=list(AXES))
    p.add_argument("--algos", nargs="+", choices=list(ALGOS), default=list(ALGOS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker process")
    p.add_argument("--repeats", type=int, default=1, help="processes per point (medians)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    p.add_argument("--out", help="output stem (default benchmarks/results/growth[_quick])")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.threads < 1 or args.repeats < 1:
        p.error(f"--threads {args.threads} and --repeats {args.repeats} must both be >= 1")
    size_name = "quick" if args.quick else "default"
    size = SIZES[size_name]
    stem = Path(args.out or ROOT / "benchmarks" / "results" / f"growth{'_quick' * args.quick}")
    points = plan_points(size, args.axes)
    runs = run_all(args, points)
    meta = {
        **provenance(),
        "size": size_name,
        "base": size["base"],
        "axes": {a: size["axes"][a] for a in args.axes},
        "algos": {a: {"algorithm": ALGOS[a][0], **ALGOS[a][1]} for a in args.algos},
        "inner_lr": INNER_LR,
        "threads": args.threads,
        "repeats": args.repeats,
    }
    rows = summarize(runs, points)
    write_json(stem.with_suffix(".json"), {"meta": meta, "rows": rows, "runs": runs})
    write_reports(stem, meta, rows, runs)
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
