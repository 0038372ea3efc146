"""learn2learn 0.2.0: `l2l.algorithms.MAML(model, lr, first_order=...)`, `clone()`, `adapt()`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .workload import BenchEpisode, Case, Size, loss_fn, model_inputs


def make_stepper(model: nn.Module, case: Case, size: Size) -> Callable[[list[BenchEpisode]], None]:
    import learn2learn as l2l

    # allow_unused: frozen tensors are skipped by adapt() either way; nothing else is unused
    # (MiniLM is loaded without its pooler).
    maml = l2l.algorithms.MAML(model, lr=size.inner_lr, first_order=case.first_order)

    def step(episodes: list[BenchEpisode]) -> None:
        for ep in episodes:
            learner = maml.clone()  # clones every parameter, frozen ones too
            for _ in range(size.inner_steps):
                logits = learner(**model_inputs(ep.support, ep.n_way))
                learner.adapt(loss_fn(logits, ep.support["labels"]))
            logits = learner(**model_inputs(ep.query, ep.n_way))
            (loss_fn(logits, ep.query["labels"]) / len(episodes)).backward()

    return step
