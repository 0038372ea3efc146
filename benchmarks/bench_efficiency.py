"""Time per meta-step and peak memory of metanlp's efficiency options, one process per mode.

Workload (``--full``, the target of the benchmarks issue): MiniLM (real weights, eager
attention), 5-way 5-shot + 5 query, seq len 64, meta-batch 4, 5 inner SGD steps; LoRA r=8
(query, value) + head, second and first order; also the top 2 layers + head. The default size is
smaller so that it finishes in about 10 minutes on 2 busy CPU cores. Inputs are random token ids
with a quarter of each row padded: cost does not depend on the words.

Every mode runs in its own subprocess (peak RSS from ``getrusage``, minus the RSS of a process
that loads the same model and episodes but takes no step), modes alternate over ``--rounds``,
times are medians. Ratios are to the plain mode of the same family, measured in the same run.

    python benchmarks/bench_efficiency.py            # default size
    python benchmarks/bench_efficiency.py --full     # the issue's workload
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import run_json_worker  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# name -> (algorithm, params, config overrides, family whose plain mode is the reference)
MODES: dict[str, tuple[str, str, dict, str]] = {
    "lora-2nd/plain": ("maml", "lora", {}, "lora-2nd"),
    "lora-2nd/ckpt-layers": ("maml", "lora", {"checkpointing": "layers"}, "lora-2nd"),
    "lora-2nd/ckpt-steps": ("maml", "lora", {"checkpointing": "steps"}, "lora-2nd"),
    "lora-2nd/vmap": ("maml", "lora", {"task_batching": "vmap"}, "lora-2nd"),
    "lora-1st/plain": ("fomaml", "lora", {}, "lora-1st"),
    "lora-1st/ckpt-layers": ("fomaml", "lora", {"checkpointing": "layers"}, "lora-1st"),
    "lora-1st/vmap": ("fomaml", "lora", {"task_batching": "vmap"}, "lora-1st"),
    "top2-2nd/plain": ("maml", "top", {"frozen_prefix_cache": "off"}, "top2-2nd"),
    "top2-2nd/prefix-cache": ("maml", "top", {"frozen_prefix_cache": "on"}, "top2-2nd"),
    "top2-1st/plain": ("fomaml", "top", {"frozen_prefix_cache": "off"}, "top2-1st"),
    "top2-1st/prefix-cache": ("fomaml", "top", {"frozen_prefix_cache": "on"}, "top2-1st"),
}


def sizes(full: bool) -> dict:
    if full:
        return {"shots": 5, "queries": 5, "seq": 64, "meta_batch": 4, "steps": 5, "repeats": 3}
    return {"shots": 2, "queries": 2, "seq": 32, "meta_batch": 2, "steps": 2, "repeats": 2}


def worker(mode: str, size: dict, threads: int) -> dict:
    """Build the model and episodes, take ``repeats`` meta-steps; report times and peak RSS."""
    import torch
    from peft import LoraConfig

    from benchmarks.peers.workload import random_token_episodes
    from metanlp.meta import build_algorithm
    from metanlp.models import FewShotModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    algo_name, params, overrides, _ = MODES.get(mode, ("maml", "lora", {}, ""))
    peft = LoraConfig(r=8, target_modules=["query", "value"]) if params == "lora" else None
    model = FewShotModel.from_pretrained(attn_implementation="eager", max_ways=5, peft_config=peft)
    config = {"params": params, "top_layers": 2, "inner_steps": size["steps"], "inner_lr": 1e-2}
    config.update(train_dropout=False, **overrides)
    algo = build_algorithm(algo_name, model, config)

    episodes = random_token_episodes(
        5, size["shots"], size["queries"], size["seq"], size["meta_batch"]
    )
    times, cpu_times = [], []  # CPU seconds are steadier than wall time on shared cores
    if mode != "baseline":
        for _ in range(size["repeats"]):
            model.zero_grad(set_to_none=True)
            start, cpu = time.perf_counter(), time.process_time()
            algo.meta_backward_batch(episodes, scale=1 / len(episodes))
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"mode": mode, "times_s": times, "cpu_s": cpu_times, "max_rss_mb": rss_mb}


def run_mode(mode: str, size: dict, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--size", json.dumps(size)]
    cmd += ["--threads", str(threads)]
    result = run_json_worker(cmd)
    if result.get("status") == "failed":
        raise RuntimeError(f"mode {mode} failed: {result['error']}")
    return result


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    base = statistics.median(r["max_rss_mb"] for r in runs["baseline"])
    rows = []
    for mode, (_, _, _, family) in MODES.items():
        if mode not in runs:
            continue
        times = [t for r in runs[mode] for t in r["times_s"]]
        cpu = [t for r in runs[mode] for t in r["cpu_s"]]
        peak = statistics.median(r["max_rss_mb"] for r in runs[mode]) - base
        rows.append({"mode": mode, "family": family, "time_s": statistics.median(times),
                     "times_s": times, "cpu_s": statistics.median(cpu), "peak_mb": peak})  # fmt: skip
    ref = {r["family"]: r for r in rows if r["mode"].endswith("/plain")}
    for r in rows:
        r["time_ratio"] = r["time_s"] / ref[r["family"]]["time_s"]
        r["cpu_ratio"] = r["cpu_s"] / ref[r["family"]]["cpu_s"]
        r["memory_ratio"] = r["peak_mb"] / ref[r["family"]]["peak_mb"]
    return rows


def write(rows: list[dict], meta: dict, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"# Efficiency options ({meta['date']})", "",
        f"Command: `{meta['command']}`  ", f"Machine: {meta['machine']}  ",
        f"Versions: {meta['versions']}  ", f"Workload: {meta['workload']}", "",
        "| mode | wall s / meta-step | x plain | CPU s / meta-step | x plain | peak MB above model | x plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['time_s']:.2f} | {r['time_ratio']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['cpu_ratio']:.2f} | {r['peak_mb']:.0f} | {r['memory_ratio']:.2f} |"
        )
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    names = [r["mode"] for r in rows]
    for ax, key, title in zip(
        axes, ("cpu_ratio", "memory_ratio"), ("CPU time", "peak memory"), strict=True
    ):
        ax.barh(names, [r[key] for r in rows], color="tab:blue")
        ax.axvline(1.0, color="grey", lw=1)
        ax.set_title(f"{title} / plain mode of the family")
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the issue's workload (slow on CPU)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per mode, alternated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, json.loads(args.size), args.threads)))
        return
    size = sizes(args.full)
    runs: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for mode in ["baseline", *args.modes]:
            runs.setdefault(mode, []).append(run_mode(mode, size, args.threads))
            print(f"{mode}: {runs[mode][-1]}", flush=True)
    import peft
    import torch
    import transformers

    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, "
        f"{platform.platform()}",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"peft {peft.__version__}, python {platform.python_version()}",
        "workload": f"MiniLM, 5-way {size['shots']}-shot + {size['queries']} query, seq "
        f"{size['seq']}, meta-batch {size['meta_batch']}, {size['steps']} inner SGD steps, "
        f"{size['repeats']} meta-steps x {args.rounds} process(es) per mode",
    }
    rows = summarize(runs)
    write(rows, meta, "efficiency_full" if args.full else "efficiency")
    print((RESULTS / ("efficiency_full.md" if args.full else "efficiency.md")).read_text())


if __name__ == "__main__":
    main()
