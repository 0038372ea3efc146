"""metanlp's side of the comparison: `build_algorithm` + `meta_backward_batch`, as the trainer uses them.

Modes (`metanlp.meta.efficient`, each exact): the default config (``frozen_prefix_cache="auto"``,
which skips the frozen lower layers' graph for ``top`` when dropout is off), ``plain`` (no
efficiency option), ``ckpt`` (per-step checkpointing: memory of one inner step whatever k) and
``vmap`` (the meta-batch's tasks in one ``torch.func.vmap`` pass).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from .workload import BenchEpisode, Case, Size

MODES: dict[str, dict[str, str]] = {
    "default": {},
    "plain": {"frozen_prefix_cache": "off"},
    "ckpt": {"checkpointing": "steps"},
    "vmap": {"task_batching": "vmap"},
}


def make_stepper(
    model: nn.Module, case: Case, size: Size, mode: str = "default"
) -> Callable[[list[BenchEpisode]], None]:
    """A meta-step: ``maml`` (second order) or ``fomaml`` over the case's parameters."""
    from metanlp.meta import build_algorithm

    name = "fomaml" if case.first_order else "maml"
    config = {
        "params": case.params,
        "top_layers": case.top_layers,
        "inner_steps": size.inner_steps,
        "inner_lr": size.inner_lr,
        "first_order": case.first_order,
        "train_dropout": False,  # eval mode, as every implementation here
        **MODES[mode],
    }
    algo = build_algorithm(name, model, config)

    def step(episodes: list[BenchEpisode]) -> None:
        algo.meta_backward_batch(episodes, scale=1.0 / len(episodes))

    return step


make_plain_stepper = partial(make_stepper, mode="plain")
make_ckpt_stepper = partial(make_stepper, mode="ckpt")
make_vmap_stepper = partial(make_stepper, mode="vmap")
