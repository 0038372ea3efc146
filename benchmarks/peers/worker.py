"""Run one implementation of the workload in this process and report time, memory and gradients.

Used by ``benchmarks/bench_vs_peers.py`` (one process per implementation and repeat)::

    python -m benchmarks.peers.worker --impl learn2learn --case lora_so --size '{"meta_batch": 1}' \
        --episodes ep.safetensors --init init.safetensors --out out_dir

Writes ``out_dir/result.json`` (and ``grads.safetensors`` with ``--save-grads``). A failure of
the implementation is a result (``status: failed`` with the exception), not a crash.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import current_rss_bytes, peak_rss_bytes, reset_peak_rss  # noqa: E402
from benchmarks.peers import IMPLEMENTATIONS  # noqa: E402


def _error(err: BaseException) -> dict:
    frames = traceback.extract_tb(err.__traceback__)
    # Point at the library that raised, not at torch's autograd engine underneath it.
    lib = [f for f in frames if "site-packages" in f.filename and "/torch/" not in f.filename]
    top = (lib or frames)[-1] if frames else None
    where = f"{top.filename.split('site-packages/')[-1]}:{top.lineno} in {top.name}" if top else ""
    return {
        "error": " ".join(f"{type(err).__name__}: {err}".split())[:2000],
        "where": where,
        "traceback": "".join(traceback.format_exception(err))[-4000:],
    }


def run(args: argparse.Namespace) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from benchmarks.peers.workload import (
        CASES,
        Size,
        adapted_names,
        build_model,
        gradients,
        load_episodes,
        load_init,
        to_device,
        zero_grads,
    )  # fmt: skip

    torch.set_num_threads(args.threads)
    case, size = CASES[args.case], Size(**json.loads(args.size))
    result: dict = {"impl": args.impl, "case": case.name, "status": "ok", "phase": "setup"}
    module_name, func_name = IMPLEMENTATIONS[args.impl].split(":")
    try:
        t0 = time.perf_counter()
        device = torch.device(args.device)
        episodes = [to_device(ep, device) for ep in load_episodes(args.episodes)]
        model = build_model(case, size.n_way)
        load_init(model, load_file(args.init))
        model.to(device)
        names = adapted_names(model, case)
        module = importlib.import_module(module_name)
        factory = getattr(module, func_name)
        stepper = factory(model, case, size)
        result["setup_s"] = time.perf_counter() - t0
        result["adapted_tensors"] = len(names)
        result["adapted_parameters"] = int(
            sum(dict(model.named_parameters())[n].numel() for n in names)
        )
        if args.warmup:
            result["phase"] = "warmup"
            warm = factory(model, case, Size(**{**size.to_dict(), "inner_steps": 1}))
            warm(episodes[:1])
            zero_grads(model)
        result["phase"] = "step"
        times, cpu, peaks = [], [], []
        for i in range(args.steps):
            zero_grads(model)
            result["rss_before_bytes"] = current_rss_bytes()
            reset_peak_rss()
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t, c = time.perf_counter(), time.process_time()
            stepper(episodes)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            # CPU seconds of this process (all threads): far less sensitive than wall time to
            # other work sharing the machine.
            cpu.append(time.process_time() - c)
            # On a GPU the memory that matters is the device's; on CPU the process's RSS.
            peaks.append(
                torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss_bytes()
            )
            if i == 0 and args.save_grads:
                save_file(gradients(model, names), str(Path(args.out) / "grads.safetensors"))
        result.update(phase="done", step_s=times, cpu_s=cpu, peak_rss_step_bytes=peaks)
    except Exception as err:  # a peer failing is a finding, reported with its exact error
        na = type(err).__name__ == "NotApplicable"
        result.update(status="n/a" if na else "failed", **_error(err))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--impl", required=True, choices=sorted(IMPLEMENTATIONS))
    p.add_argument("--case", required=True)
    p.add_argument("--size", default="{}", help="JSON of workload.Size fields")
    p.add_argument("--episodes", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=1, help="timed meta-steps")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--save-grads", action="store_true")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")  # gym / learn2learn / higher deprecation noise
    result = run(args)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
