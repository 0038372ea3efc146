"""Two CPU processes (gloo, started by torchrun as `accelerate launch` does) = one process.

Each process runs half of every meta-batch's tasks; the trainer all-reduces the meta-gradients
by hand (no DDP around the functional inner loop). After 2 meta-steps the meta-parameters and
the logged metrics must equal a 1-process run on the same tasks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import build_corpus, last_gradients, meta_parameters, tiny_config

HELPER = Path(__file__).with_name("trainer_helpers.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def env(tmp_path):
    out = dict(os.environ)
    out.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), out.get("PYTHONPATH", "")])
    return out


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each worker process
    yield
    torch.set_num_threads(threads)


def test_two_processes_equal_one(tmp_path, env, monkeypatch, one_thread):
    build_corpus(tmp_path)
    config = tiny_config(tmp_path, tmp_path / "two", max_steps=2, eval_every=2, cpu=True)
    config.to_json(tmp_path / "two.json")
    result = tmp_path / "two.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(HELPER), str(tmp_path / "two.json"), str(result)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(result.with_suffix(".json").read_text())
    assert two["world_size"] == 2

    # The same run in this process, alone.
    from accelerate.state import AcceleratorState

    from metanlp.training import MetaTrainer

    for key in ("HF_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(key, env[key])
    AcceleratorState._reset_state()
    one = MetaTrainer(tiny_config(tmp_path, tmp_path / "one", max_steps=2, eval_every=2, cpu=True))
    history = one.train().history
    AcceleratorState._reset_state()
    assert one.world_size == 1

    two_tensors = load_file(str(result))
    grads = last_gradients(one)
    for name, value in meta_parameters(one).items():
        # The all-reduced meta-gradient equals the single-process one up to summation order ...
        grad_two = two_tensors[f"grad.{name}"]
        assert (grad_two - grads[name]).norm() <= 1e-4 * grads[name].norm() + 1e-9, name
        # ... and so do the weights; AdamW divides by sqrt(v), which magnifies float noise on
        # near-zero gradients, hence an absolute bound of 2% of one step's size (lr 3e-3).
        assert (two_tensors[name] - value).abs().max() <= 6e-5, name
    # Training moved the parameters away from the start (else equality would prove nothing).
    assert two["history"][0]["grad_norm"] > 0
    for mine, theirs in zip(history, two["history"], strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            expected = (
                pytest.approx(value, rel=1e-5, abs=1e-6) if isinstance(value, float) else value
            )
            assert theirs[key] == expected, key


AUTO_WORKER = """
import json, sys
import torch
from metanlp.training.precision import resolve_mixed_precision
from accelerate import PartialState

torch.set_num_threads(1)
rank = int(__import__("os").environ["RANK"])
# The ranks would decide differently (rank 0's threshold always passes, rank 1's never does):
# the run must still train in one precision, the main process's.
chosen, note = resolve_mixed_precision("auto", cpu=True, min_speedup=0.0 if rank == 0 else float("inf"))
state = PartialState()
# One file per rank: two processes printing to one pipe can interleave their lines.
out = __import__("pathlib").Path(sys.argv[1]) / f"rank{state.process_index}.json"
out.write_text(json.dumps({"rank": state.process_index, "world": state.num_processes, "chosen": chosen}))
# Leave the process group cleanly: a rank exiting with gloo's threads alive aborts ("terminate
# called without an active exception").
import torch.distributed as dist
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
"""


def test_mixed_precision_auto_is_decided_once_for_all_processes(tmp_path, env):
    script = tmp_path / "auto_worker.py"
    script.write_text(AUTO_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
           str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in seen) == [0, 1] and all(r["world"] == 2 for r in seen)
    assert {r["chosen"] for r in seen} == {"bf16"}
