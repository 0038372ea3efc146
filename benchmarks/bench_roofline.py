"""Roofline of a meta-step: achieved FLOP/s against this machine's own matmul peak (issue 31).

1. **Peak**: the best FLOP/s of `torch.matmul` on square matrices (sides 512, 1024, 2048; best
   of several repeats, `metanlp.training.precision.matmul_flops_per_s`) per dtype (fp32, bf16)
   and thread count (1, 2).
2. **Achieved**: the FLOPs of one meta-step, counted once per algorithm by
   `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention products;
   elementwise work such as softmax, layer norm and GELU counts 0), divided by the step's best
   wall time, in fp32 and under bf16 autocast (fp32 master weights, as the trainer's
   ``mixed_precision: bf16`` / ``auto``), with 1 and 2 intra-op threads.

Workload: the general learner's (`recipes/general_learner.py`): MiniLM, 5-way 5-shot + 5 query,
sequence length 64 (random token ids, the last quarter of each row padded: cost does not depend
on the words), one task per meta-step. Algorithms: ProtoNet adapting every weight (the general
learner's), FOMAML adapting every weight, and second-order MAML on LoRA r=8 (query, value) + head
(eager attention: SDPA has no double backward on CPU), ``--inner-steps`` SGD steps each.
Configurations alternate within each round, so load drifts on a shared machine hit all alike.

``--trainer`` adds `MetaTrainer` steps with ``mixed_precision`` ``no`` against ``auto`` on real
tweets episodes; ``--padding`` the share of padding in the general learner's real episodes and
what length bucketing within an episode would leave of it.

    python benchmarks/bench_roofline.py            # the general learner's workload
    python benchmarks/bench_roofline.py --smoke    # tiny sizes, well under a minute
    python benchmarks/bench_roofline.py --trainer --padding   # + trainer steps, padding share
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    markdown_table,
    provenance,
    provenance_markdown,
    write_json,
    write_markdown,
)

RESULTS = ROOT / "benchmarks" / "results"
DTYPES = ("fp32", "bf16")
OMP_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# name -> (algorithm, adapted params, LoRA?, what the table calls it)
ALGORITHMS: dict[str, tuple[str, str, bool, str]] = {
    "protonet": ("protonet", "all", False, "ProtoNet, all weights"),
    "fomaml": ("fomaml", "all", False, "FOMAML, all weights"),
    "lora-maml": ("maml", "lora", True, "2nd-order MAML, LoRA r=8 + head"),
}
SIZES = {
    "default": {"n_way": 5, "shots": 5, "queries": 5, "seq": 64, "inner_steps": 1,
                "repeats": 3, "peak_sides": [512, 1024, 2048], "peak_repeats": 5},
    "smoke": {"n_way": 2, "shots": 1, "queries": 1, "seq": 16, "inner_steps": 1,
              "repeats": 1, "peak_sides": [256], "peak_repeats": 2},
}  # fmt: skip


def cpu_flags() -> dict[str, bool]:
    """Whether the CPU reports bf16 / AMX units (``/proc/cpuinfo`` flags; False elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")
    return {name: name in flags for name in wanted}


def load_average() -> str:
    """``uptime``'s load averages: the machine may be shared, and the numbers say how much."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def measure_peaks(size: dict, threads: list[int]) -> dict[str, dict[int, float]]:
    """dtype -> threads -> best matmul FLOP/s over the sides in ``size["peak_sides"]``."""
    import torch

    from metanlp.training.precision import matmul_flops_per_s

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks: dict[str, dict[int, float]] = {d: {} for d in DTYPES}
    for t in threads:
        torch.set_num_threads(t)
        for d in DTYPES:
            peaks[d][t] = max(
                matmul_flops_per_s(dtypes[d], side, size["peak_repeats"])
                for side in size["peak_sides"]
            )
    return peaks


def build(name: str, size: dict):
    """The algorithm of ``name`` on a fresh MiniLM, and the episode of one meta-step."""
    import torch
    from peft import LoraConfig

    from benchmarks.peers.workload import random_token_episodes
    from metanlp.meta import build_algorithm
    from metanlp.models import FewShotModel

    algorithm, params, lora, _ = ALGORITHMS[name]
    torch.manual_seed(0)
    peft = LoraConfig(r=8, lora_dropout=0.0, target_modules=["query", "value"]) if lora else None
    model = FewShotModel.from_pretrained(
        attn_implementation="sdpa", max_ways=size["n_way"], peft_config=peft
    )
    config = {"params": params}
    if algorithm != "protonet":
        config.update(inner_steps=size["inner_steps"], inner_lr=1e-2)
    algo = build_algorithm(algorithm, model, config)
    (episode,) = random_token_episodes(
        size["n_way"], size["shots"], size["queries"], size["seq"], count=1
    )
    return algo, episode


def step(algo, episode, dtype: str) -> tuple[float, float]:
    """One meta-step (meta-gradient into ``.grad``); its wall and process CPU seconds."""
    import torch

    algo.model.zero_grad(set_to_none=True)
    start, cpu = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        algo.meta_backward(episode)
    return time.perf_counter() - start, time.process_time() - cpu


def count_flops(algo, episode) -> int:
    """FLOPs of one fp32 meta-step, counted by `torch.utils.flop_counter.FlopCounterMode`."""
    from torch.utils.flop_counter import FlopCounterMode

    algo.model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        algo.meta_backward(episode)
    return int(counter.get_total_flops())


def measure_steps(size: dict, threads: list[int], names: list[str]) -> list[dict]:
    """Per algorithm: counted FLOPs, then ``repeats`` timed steps of every (threads, dtype)."""
    import torch

    rows = []
    for name in names:
        algo, episode = build(name, size)
        torch.set_num_threads(1)
        flops = count_flops(algo, episode)
        times: dict[tuple[int, str], list[tuple[float, float]]] = {}
        torch.set_num_threads(threads[0])
        for d in DTYPES:  # warm-up: first-call kernel selection is not the steady state
            step(algo, episode, d)
        for _ in range(size["repeats"]):
            for t in threads:
                torch.set_num_threads(t)
                for d in DTYPES:
                    times.setdefault((t, d), []).append(step(algo, episode, d))
        for (t, d), pairs in times.items():
            ts, cpu = [w for w, _ in pairs], [c for _, c in pairs]
            rows.append({"algorithm": name, "label": ALGORITHMS[name][3], "threads": t,
                         "dtype": d, "flops": flops, "times_s": ts, "best_s": min(ts),
                         "median_s": statistics.median(ts), "cpu_s": cpu,
                         "best_cpu_s": min(cpu)})  # fmt: skip
            print(
                f"{name} threads={t} {d}: best {min(ts):.2f} s, {flops / 1e9:.1f} GFLOP", flush=True
            )
        del algo, episode
    return rows


def trainer_steps(data_dir: str | None, repeats: int) -> dict:
    """`MetaTrainer` meta-steps with ``mixed_precision`` ``"no"`` and ``"auto"`` (alternated, one
    thread): ProtoNet on every weight, real tweets episodes (3-way 5-shot + 5 query, max length
    64), so the trainer's own path and real text lengths are in the measurement."""
    import tempfile

    import torch
    from accelerate.state import AcceleratorState

    from metanlp.training import MetaTrainer, MetaTrainerConfig

    torch.set_num_threads(1)
    source = {"dataset": "tweets", "n_way": 3, "k_shot": 5, "q_query": 5, "group_by": "domain"}
    trainers, out = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in ("no", "auto"):
            AcceleratorState._reset_state()
            config = MetaTrainerConfig.from_dict({
                "adapt": "all", "algorithm": "protonet", "algorithm_config": {},
                "data": {"train": [source], "val": None, "data_dir": data_dir, "max_length": 64},
                "meta_batch_size": 1, "max_steps": repeats + 1, "report_to": [],
                "progress_bar": False, "keep_best": False, "output_dir": f"{tmp}/{setting}",
                "mixed_precision": setting,
            })  # fmt: skip
            trainers[setting] = MetaTrainer(config)
            trainers[setting].meta_step()  # warm-up
        for _ in range(repeats):
            for setting, trainer in trainers.items():
                wall, cpu = time.perf_counter(), time.process_time()
                trainer.meta_step()
                record = out.setdefault(
                    setting, {"chosen": trainer.mixed_precision, "wall_s": [], "cpu_s": []}
                )
                record["wall_s"].append(time.perf_counter() - wall)
                record["cpu_s"].append(time.process_time() - cpu)
    AcceleratorState._reset_state()
    for record in out.values():
        record["median_wall_s"] = statistics.median(record["wall_s"])
        record["median_cpu_s"] = statistics.median(record["cpu_s"])
    return out


def padding_share(data_dir: str | None, episodes: int, buckets: int = 4) -> dict:
    """How much of the general learner's episodes is padding, and how much length bucketing
    within an episode (``buckets`` equal-count groups by length, each padded to its own
    longest) would leave: the most a bucketed step could save on the linear layers."""
    import torch

    from metanlp.corpora import default_data_dir
    from metanlp.episodes import EpisodeCollator
    from metanlp.general import GeneralTasks, general_task_sampler
    from metanlp.models import load_encoder

    collator = EpisodeCollator(load_encoder().tokenizer, 64)
    root = data_dir or default_data_dir()
    sampler, _ = general_task_sampler(root, collator, GeneralTasks(k_shot=5, q_query=5), seed=0)
    positions = real = bucketed = 0
    for _ in range(episodes):
        episode = sampler.build(sampler.next_spec())
        for part in (episode.support, episode.query):
            lengths = part["attention_mask"].sum(1)
            positions += part["attention_mask"].numel()
            real += int(lengths.sum())
            for group in torch.tensor_split(torch.sort(lengths).values, buckets):
                bucketed += int(group.max()) * len(group) if len(group) else 0
    return {"episodes": episodes, "buckets": buckets, "real_share": real / positions,
            "bucketed_share": bucketed / positions}  # fmt: skip


def summarize(rows: list[dict], peaks: dict[str, dict[int, float]]) -> None:
    """Add achieved FLOP/s (at the best time), its share of the peak, and bf16's speed-up."""
    by_key = {(r["algorithm"], r["threads"], r["dtype"]): r for r in rows}
    for r in rows:
        r["achieved_flops"] = r["flops"] / r["best_s"]
        r["peak_flops"] = peaks[r["dtype"]][r["threads"]]
        r["fraction_of_peak"] = r["achieved_flops"] / r["peak_flops"]
        # Per CPU-second of this process: what a step achieves while it holds a core, which
        # wall time on a shared machine understates (with 2 threads it counts both, spinning too).
        r["flops_per_cpu_s"] = r["flops"] / r["best_cpu_s"]
        # Against one core's peak: a CPU-second is one core's second, and on a busy machine the
        # 2-thread peak is not twice the 1-thread one (the other core is someone else's).
        core_peak = peaks[r["dtype"]].get(1, r["peak_flops"] / r["threads"])
        r["cpu_fraction_of_peak"] = r["flops_per_cpu_s"] / core_peak
        fp32 = by_key[(r["algorithm"], r["threads"], "fp32")]
        r["speedup_vs_fp32"] = fp32["best_s"] / r["best_s"]
        one = by_key.get((r["algorithm"], 1, r["dtype"]))
        r["speedup_vs_1_thread"] = one["best_s"] / r["best_s"] if one else None


def write(result: dict, out: Path, stem: str) -> None:
    """``<stem>.json``, ``<stem>.md`` (tables) and ``<stem>.png`` (achieved vs peak per dtype)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, peaks, threads = result["rows"], result["peaks"], result["threads"]
    write_json(out / f"{stem}.json", result)
    peak_table = markdown_table(
        ["dtype", *[f"{t} thread(s), GFLOP/s" for t in threads]],
        [[d, *[peaks[d][t] / 1e9 for t in threads]] for d in DTYPES],
    )
    step_table = markdown_table(
        ["algorithm", "threads", "dtype", "GFLOP / step", "best s", "median s",
         "achieved GFLOP/s", "% of peak", "x fp32", "x 1 thread", "CPU s", "GFLOP / CPU-s", "% of 1-thread peak per CPU-s"],
        [[r["label"], r["threads"], r["dtype"], r["flops"] / 1e9, r["best_s"], r["median_s"],
          r["achieved_flops"] / 1e9, 100 * r["fraction_of_peak"], r["speedup_vs_fp32"],
          r["speedup_vs_1_thread"], r["best_cpu_s"], r["flops_per_cpu_s"] / 1e9,
          100 * r["cpu_fraction_of_peak"]]
         for r in rows],
    )  # fmt: skip
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in result["cpu_flags"].items())
    env = ", ".join(f"{k}={v}" for k, v in result["environment"].items() if v) or "defaults"
    sections = []
    if result.get("trainer"):
        t = result["trainer"]
        sections.append(
            "## MetaTrainer steps: mixed_precision no vs auto\n\nProtoNet on every weight, real "
            "tweets episodes (3-way 5-shot + 5 query, max length 64), one thread, alternated; "
            f"medians of {len(t['no']['wall_s'])} steps after a warm-up.\n\n"
            + markdown_table(
                ["setting", "path chosen", "median wall s", "median CPU s"],
                [[k, v["chosen"], v["median_wall_s"], v["median_cpu_s"]] for k, v in t.items()],
            )
            + f"\n\nauto / no: wall x{t['no']['median_wall_s'] / t['auto']['median_wall_s']:.2f}, "
            f"CPU x{t['no']['median_cpu_s'] / t['auto']['median_cpu_s']:.2f} faster."
        )
    if result.get("padding"):
        p = result["padding"]
        sections.append(
            "## Padding in the general learner's episodes\n\n"
            f"Over {p['episodes']} episodes of `general_task_sampler` (5-shot + 5 query, max "
            f"length 64, support and query each padded to their longest): real tokens fill "
            f"{100 * p['real_share']:.1f} % of the padded positions; {p['buckets']} length buckets "
            f"per part, each padded to its own longest, would keep {100 * p['bucketed_share']:.1f} "
            "% of them."
        )
    write_markdown(
        out / f"{stem}.md",
        "Roofline of a meta-step (issue 31)",
        [
            provenance_markdown(result["provenance"]),
            f"- CPU flags: {flags}  \n- Load while measuring: start `{result['load_before']}`, "
            f"end `{result['load_after']}`  \n- Workload: {result['workload']}  \n"
            f"- OpenMP environment: {env}",
            "## Matmul peak (torch.matmul, square matrices, best of repeats)\n\n" + peak_table,
            "## One meta-step\n\nFLOPs counted by `torch.utils.flop_counter.FlopCounterMode` on "
            "one fp32 step (matmuls and attention products; elementwise work counts 0); achieved "
            "= FLOPs / best wall time; % of peak against the same dtype and thread count; CPU s = the "
            "process's CPU time of the step with the least (all threads, spin-waits included); "
            "% of 1-thread peak per CPU-s = GFLOP per CPU-second against one core's peak (on a "
            "shared machine the fairer share: the peak is a best-of of short products, a step is "
            "long and waits for the core)."
            "\n\n" + step_table,
            *sections,
        ],
    )
    fig, axes = plt.subplots(1, len(DTYPES), figsize=(12, 4.5), sharey=True)
    names = list(dict.fromkeys(r["algorithm"] for r in rows))
    width = 0.8 / (2 * len(names) + 1)
    for ax, d in zip(axes, DTYPES, strict=True):
        xs = range(len(threads))
        ax.bar([x - 0.4 + width / 2 for x in xs], [peaks[d][t] / 1e9 for t in threads],
               width, color="grey", label="matmul peak")  # fmt: skip
        for i, name in enumerate(names):
            picked = [next(r for r in rows if r["algorithm"] == name and r["threads"] == t
                           and r["dtype"] == d) for t in threads]  # fmt: skip
            ax.bar([x - 0.4 + width * (2 * i + 1.5) for x in xs],
                   [r["achieved_flops"] / 1e9 for r in picked], width, color=f"C{i}",
                   label=f"{ALGORITHMS[name][3]}: per wall s")  # fmt: skip
            ax.bar([x - 0.4 + width * (2 * i + 2.5) for x in xs],
                   [r["flops_per_cpu_s"] / 1e9 for r in picked], width,
                   color=f"C{i}", alpha=0.45, hatch="//",
                   label=f"{ALGORITHMS[name][3]}: per CPU-second")  # fmt: skip
        ax.set_xticks(list(xs), [f"{t} thread(s)" for t in threads])
        ax.set_title(f"{d}{' autocast' if d == 'bf16' else ''}")
        ax.set_ylabel("GFLOP/s")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Meta-step achieved FLOP/s vs this machine's matmul peak")
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (well under a minute)")
    parser.add_argument("--threads", type=int, nargs="+",
                        help="intra-op thread counts (default 1 2; --smoke: 1)")  # fmt: skip
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--inner-steps", type=int, help="inner SGD steps of FOMAML / MAML")
    parser.add_argument("--repeats", type=int, help="timed meta-steps per configuration")
    parser.add_argument("--trainer", action="store_true",
                        help="also time MetaTrainer steps, mixed_precision no vs auto (tweets)")  # fmt: skip
    parser.add_argument("--padding", action="store_true",
                        help="also measure the padding share of general-learner episodes")  # fmt: skip
    parser.add_argument("--data", help="built corpora for --trainer (default $METANLP_DATA_DIR)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the result files")
    parser.add_argument("--stem", help="result file name (default roofline / roofline_smoke)")
    args = parser.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "default"])
    if args.inner_steps is not None:
        size["inner_steps"] = args.inner_steps
    if args.repeats is not None:
        size["repeats"] = args.repeats
    threads = sorted(set(args.threads or ([1] if args.smoke else [1, 2])))
    load_before = load_average()
    peaks = measure_peaks(size, threads)
    print({d: {t: f"{v / 1e9:.1f} GFLOP/s" for t, v in p.items()} for d, p in peaks.items()})
    rows = measure_steps(size, threads, args.algorithms)
    summarize(rows, peaks)
    trainer = trainer_steps(args.data, size["repeats"]) if args.trainer else None
    padding = padding_share(args.data, 4 if args.smoke else 40) if args.padding else None
    workload = (
        f"MiniLM, {size['n_way']}-way {size['shots']}-shot + {size['queries']} query, seq "
        f"{size['seq']}, one task per meta-step, {size['inner_steps']} inner SGD step(s) for "
        f"FOMAML / MAML, {size['repeats']} timed step(s) per configuration after a warm-up"
    )
    result = {
        "provenance": provenance(sys.argv if argv is None else ["bench_roofline.py", *argv]),
        "cpu_flags": cpu_flags(),
        "load_before": load_before,
        "load_after": load_average(),
        "flop_count": "torch.utils.flop_counter.FlopCounterMode, one fp32 meta-step",
        # libgomp's threads spin at barriers by default: on a busy machine that decides what
        # 2 threads are worth, so the setting is part of the result.
        "environment": {k: os.environ.get(k) for k in OMP_ENV},
        "workload": workload,
        "size": size,
        "threads": threads,
        "peaks": peaks,
        "rows": rows,
        "trainer": trainer,
        "padding": padding,
    }
    stem = args.stem or ("roofline_smoke" if args.smoke else "roofline")
    write(result, args.out, stem)
    print((args.out / f"{stem}.md").read_text())
    return result


if __name__ == "__main__":
    main()
