"""Speed, memory and meta-gradient agreement: metanlp against learn2learn, TorchOpt and higher.

The same MAML workload (MiniLM, N-way K-shot episodes from BBC News, k inner SGD steps, a
meta-batch of tasks) runs in every implementation, each in its own process, the implementations
alternated across repeats. Reported per adapted-parameter case: median time per meta-step, peak
resident memory during the meta-step, metanlp's ratios to each peer, and how far each peer's
meta-gradient is from metanlp's (max abs and relative difference). Run it in the benchmark
environment (``bash benchmarks/setup_env.sh``)::

    .venv-bench/bin/python benchmarks/bench_vs_peers.py --quick   # smoke test, a few minutes
    .venv-bench/bin/python benchmarks/bench_vs_peers.py           # issue 12 size, 2 CPU cores
    .venv-bench/bin/python benchmarks/bench_vs_peers.py --full    # more repeats and cases (GPU)

Writes ``benchmarks/results/vs_peers{_quick,_full}.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    alternating_schedule,
    failure_reason,
    provenance,
    run_isolated,
)
from benchmarks.peers import DEFAULT_IMPLEMENTATIONS, IMPLEMENTATIONS  # noqa: E402
from benchmarks.peers.workload import CASES, DEFAULT_CASES, Size  # noqa: E402
from benchmarks.vs_peers_report import summarize, write_reports  # noqa: E402

PEER_MODULES = {"learn2learn": "learn2learn", "torchopt": "torchopt",
                "torchopt_metasgd": "torchopt", "higher": "higher"}  # fmt: skip
PRESETS = {
    "quick": {"repeats": 1, "meta_batch": 1, "seq_len": 32, "cases": DEFAULT_CASES},
    "default": {"repeats": 3, "meta_batch": 4, "seq_len": 64, "cases": DEFAULT_CASES},
    "full": {"repeats": 5, "meta_batch": 4, "seq_len": 64, "cases": (*DEFAULT_CASES, "all_so")},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1 repeat, meta-batch 1, seq 32")
    size.add_argument("--full", action="store_true", help="5 repeats, + all-parameter second order")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), help="adapted-parameter cases")
    p.add_argument(
        "--impls",
        nargs="+",
        choices=list(IMPLEMENTATIONS),
        default=list(DEFAULT_IMPLEMENTATIONS),
        help="metanlp_plain/_ckpt/_vmap are metanlp's efficiency modes (metanlp: default config)",
    )
    p.add_argument("--repeats", type=int)
    p.add_argument("--meta-batch", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--inner-lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="folder holding bbc_news (default $METANLP_DATA_DIR or ./data; built into benchmarks/.cache/data when missing)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument(
        "--name", help="results file stem (default vs_peers, vs_peers_quick, vs_peers_full)"
    )
    args = p.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full" if args.full else "default"]
    args.preset = "quick" if args.quick else "full" if args.full else "default"
    args.cases = args.cases or list(preset["cases"])
    for key in ("repeats", "meta_batch", "seq_len"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if "metanlp" not in args.impls:
        p.error("--impls must include metanlp: it is the reference the peers are compared with.")
    missing = [
        i
        for i in args.impls
        if i in PEER_MODULES and importlib.util.find_spec(PEER_MODULES[i]) is None
    ]
    if missing:
        p.error(f"{missing} are not installed in this Python ({sys.executable}). Run the benchmarks in "
                "their own environment: `bash benchmarks/setup_env.sh`, then `.venv-bench/bin/python "
                f"benchmarks/bench_vs_peers.py`; or leave them out with --impls.")  # fmt: skip
    return args


def load_bbc(data_dir: Path | None):
    """BBC News as built by metanlp.corpora (built into benchmarks/.cache/data when missing)."""
    from metanlp.corpora import CorpusError, default_data_dir, load_corpus

    try:
        return load_corpus("bbc_news", data_dir or default_data_dir())
    except CorpusError:
        from metanlp.corpora import bbc_news

        out = ROOT / "benchmarks" / ".cache" / "data"
        bbc_news.build(out / "bbc_news")
        return load_corpus("bbc_news", out)


def prepare_inputs(args: argparse.Namespace, size: Size, work: Path) -> dict:
    """Write the episodes and each case's initial tensors, shared by every worker."""
    import torch
    from safetensors.torch import save_file

    from benchmarks.peers.workload import BenchEpisode, build_model, init_tensors, save_episodes
    from metanlp.episodes import ClassificationSampler
    from metanlp.models import load_encoder

    tokenizer = load_encoder().tokenizer
    sampler = ClassificationSampler(
        load_bbc(args.data_dir), n_way=size.n_way, k_shot=size.k_shot, q_query=size.q_query,
        seed=args.seed, tokenizer=tokenizer, max_length=size.seq_len,
    )  # fmt: skip
    episodes = []
    for i in range(size.meta_batch):
        ep = sampler.episode(i)
        keep = ("input_ids", "attention_mask", "token_type_ids", "labels")
        episodes.append(BenchEpisode({k: v for k, v in ep.support.items() if k in keep},
                                     {k: v for k, v in ep.query.items() if k in keep}, ep.n_way))  # fmt: skip
    save_episodes(work / "episodes.safetensors", episodes)
    inits = {}
    for name in args.cases:
        torch.manual_seed(args.seed)
        model = build_model(CASES[name], size.n_way)
        inits[name] = work / f"init_{name}.safetensors"
        save_file(init_tensors(model, CASES[name]), str(inits[name]))
        del model
    return {
        "episodes": work / "episodes.safetensors",
        "inits": inits,
        "support_shape": list(episodes[0].support["input_ids"].shape),
        "query_shape": list(episodes[0].query["input_ids"].shape),
        "tasks": [ep_task for ep_task in (sampler.spec(i).task for i in range(size.meta_batch))],
    }


def run_all(args: argparse.Namespace, size: Size, inputs: dict, work: Path) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}  # fmt: skip
    runs, dead = [], set()
    for repeat, impl in alternating_schedule(args.impls, args.repeats):
        for case in args.cases:
            if (impl, case) in dead:
                continue
            out = work / f"{impl}_{case}_r{repeat}"
            cmd = [sys.executable, "-m", "benchmarks.peers.worker", "--impl", impl, "--case", case,
                   "--size", json.dumps(size.to_dict()), "--episodes", str(inputs["episodes"]),
                   "--init", str(inputs["inits"][case]), "--out", str(out),
                   "--threads", str(args.threads), "--device", args.device]  # fmt: skip
            if repeat == 0:
                cmd.append("--save-grads")
            proc = run_isolated(cmd, timeout_s=args.timeout, env=env, cwd=ROOT)
            try:
                result = json.loads((out / "result.json").read_text())
            except (OSError, json.JSONDecodeError):
                why = failure_reason(proc, args.timeout)
                result = {"impl": impl, "case": case, "status": "failed", "phase": "process",
                          "error": f"worker process died ({why}); stderr ends: {proc.stderr[-300:]}"}  # fmt: skip
            result.update(
                repeat=repeat, process_peak_rss_bytes=proc.peak_rss_bytes, wall_s=proc.wall_s
            )
            result["grads_path"] = str(out / "grads.safetensors") if repeat == 0 else None
            if result["status"] != "ok":
                dead.add((impl, case))
            runs.append(result)
            step = result.get("step_s", [None])[0]
            print(f"[r{repeat}] {case:8s} {impl:17s} {result['status']:6s} "
                  f"step={step if step is None else round(step, 2)}s "
                  f"peak={(result.get('peak_rss_step_bytes') or [0])[0] / 2**30:.2f}GiB "
                  f"{result.get('error', '')[:160]}", flush=True)  # fmt: skip
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = Size(seq_len=args.seq_len, meta_batch=args.meta_batch,
                inner_steps=args.inner_steps, inner_lr=args.inner_lr)  # fmt: skip
    prov = provenance()
    suffix = "" if args.preset == "default" else f"_{args.preset}"
    with tempfile.TemporaryDirectory(prefix="metanlp-vs-peers-") as tmp:
        work = Path(tmp)
        inputs = prepare_inputs(args, size, work)
        print(f"episodes: {inputs['tasks']} support {inputs['support_shape']} query "
              f"{inputs['query_shape']}; cases {args.cases}; impls {args.impls}", flush=True)  # fmt: skip
        runs = run_all(args, size, inputs, work)
        summary = summarize(runs, args.cases, args.impls)
    settings = {"preset": args.preset, "size": size.to_dict(), "cases": {c: CASES[c].to_dict() for c in args.cases},
                "impls": args.impls, "repeats": args.repeats, "threads": args.threads, "device": args.device,
                "seed": args.seed, "support_shape": inputs["support_shape"],
                "query_shape": inputs["query_shape"], "tasks": inputs["tasks"]}  # fmt: skip
    for r in runs:
        r.pop("grads_path", None)
    paths = write_reports(
        args.out / (args.name or f"vs_peers{suffix}"), prov, settings, summary, runs
    )
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
