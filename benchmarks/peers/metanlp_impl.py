"""metanlp's side of the comparison: `build_algorithm` + `meta_backward`, as the trainer uses them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .workload import BenchEpisode, Case, Size


def make_stepper(model: nn.Module, case: Case, size: Size) -> Callable[[list[BenchEpisode]], None]:
    """A meta-step: ``maml`` (second order) or ``fomaml`` over the case's parameters."""
    from metanlp.meta import build_algorithm

    name = "fomaml" if case.first_order else "maml"
    algo = build_algorithm(
        name,
        model,
        {
            "params": case.params,
            "top_layers": case.top_layers,
            "inner_steps": size.inner_steps,
            "inner_lr": size.inner_lr,
            "first_order": case.first_order,
            "train_dropout": False,  # eval mode, as every implementation here
        },
    )

    def step(episodes: list[BenchEpisode]) -> None:
        for ep in episodes:
            algo.meta_backward(ep, scale=1.0 / len(episodes))

    return step
