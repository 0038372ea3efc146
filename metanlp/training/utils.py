"""Small pieces of the meta-training loop: optimiser, schedule, gradient all-reduce, task seeds.

Kept apart from `metanlp.training.trainer` so each can be tested on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_scheduler

from metanlp.training.config import OptimizerConfig


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: OptimizerConfig
) -> torch.optim.AdamW:
    """AdamW over the meta-parameters.

    Fused (one kernel over every tensor) where torch has it for the parameters' device (CPU,
    CUDA): the same update as the default per-tensor loop up to float rounding, and on the
    2-core CPU a step over MiniLM's 22.6 M weights takes about 20 ms instead of 170 ms, a tenth of
    a bf16 meta-step (`benchmarks/bench_build.py`).

    Raises:
        ValueError: when there is nothing to optimise (the algorithm exposed no meta-parameters).
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError(
            "The algorithm has no trainable meta-parameters; check `adapt` and the algorithm config."
        )
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=tuple(config.betas),
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=all(p.device.type in FUSED_ADAMW_DEVICES for p in params) or None,
    )


FUSED_ADAMW_DEVICES = ("cpu", "cuda")
"""Devices whose parameters `build_optimizer` steps with torch's fused AdamW."""


# Our schedule names -> transformers' (its "constant" ignores warm-up).
_HF_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimizerConfig, max_steps: int
) -> LambdaLR:
    """`transformers.get_scheduler`: linear warm-up from 0 over ``warmup_steps``, then constant,
    linear or cosine decay to 0 at ``max_steps``."""
    return get_scheduler(
        _HF_SCHEDULES[config.schedule],
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=max_steps,
    )


def scheduler_state(scheduler: LambdaLR) -> dict:
    """The scheduler's JSON-friendly state (the factor is rebuilt from the config, not saved)."""
    state = scheduler.state_dict()
    state.pop("lr_lambdas", None)
    return state


def load_scheduler_state(scheduler: LambdaLR, state: dict) -> None:
    state = dict(state)
    state["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
    scheduler.load_state_dict(state)


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Sum ``.grad`` over processes, in one flat buffer (one collective instead of one per tensor).

    The trainer scales each task's meta-gradient by 1 / (tasks per optimiser step over all
    processes) before this call, so the sum is the meta-batch mean: the same number a single
    process computes on the same tasks. Parameters without a gradient on every rank get zeros, so
    all ranks take part in the same collective.
    """
    if world_size <= 1:
        return
    import torch.distributed as dist

    params = list(params)
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def task_seed(seed: int, index: int) -> int:
    """Seed of the dropout masks of global task ``index``: the same on any rank and after resuming."""
    return int(np.random.SeedSequence([int(seed), int(index), 0x5EED]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_task(seed: int, index: int, device: torch.device) -> Iterator[None]:
    """Run one task's forward/backward under its own torch RNG stream, leaving the global one as it was.

    This is what makes 2 processes equal 1 process: a task's dropout masks depend only on its
    global index, not on which rank ran it or what ran before.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(task_seed(seed, index))
        yield


def has_accelerator() -> bool:
    """Whether torch sees a GPU or another accelerator (else the trainer runs on CPU)."""
    accel = getattr(torch, "accelerator", None)
    if accel is not None and hasattr(accel, "is_available"):
        return bool(accel.is_available())
    return torch.cuda.is_available()


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"a.b": value}`` with scalars and strings only (TensorBoard hparams)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
