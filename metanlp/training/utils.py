"""Small pieces of the meta-training loop: optimiser, schedule, gradient all-reduce, task seeds.

Kept apart from `metanlp.training.trainer` so each can be tested on its own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from metanlp.training.config import OptimizerConfig


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: OptimizerConfig
) -> torch.optim.AdamW:
    """AdamW over the meta-parameters.

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
    )


def lr_factor(step: int, *, schedule: str, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule={schedule!r}; use 'constant', 'linear' or 'cosine'.")


class _Factor:
    # A class (not a lambda) keeps the schedule's state_dict free of closures.
    def __init__(self, schedule: str, warmup_steps: int, max_steps: int) -> None:
        self.schedule, self.warmup_steps, self.max_steps = schedule, warmup_steps, max_steps

    def __call__(self, step: int) -> float:
        return lr_factor(
            step, schedule=self.schedule, warmup_steps=self.warmup_steps, max_steps=self.max_steps
        )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimizerConfig, max_steps: int
) -> LambdaLR:
    """Linear warm-up then constant / linear / cosine decay to 0 at ``max_steps``."""
    return LambdaLR(optimizer, _Factor(config.schedule, config.warmup_steps, max_steps))


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
