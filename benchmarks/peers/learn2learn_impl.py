"""learn2learn 0.2.0: `l2l.algorithms.MAML(model, lr, first_order=...)`, `clone()`, `adapt()`."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .workload import BenchEpisode, Case, Size, loss_fn, model_inputs


def make_stepper(model: nn.Module, case: Case, size: Size) -> Callable[[list[BenchEpisode]], None]:
    import learn2learn as l2l

    # With frozen tensors (LoRA, top layers) learn2learn needs allow_nograd=True. Without it,
    # adapt() differentiates every parameter, prints "One of the differentiated Tensors does not
    # require grad" and then fails with "UnboundLocalError: cannot access local variable
    # 'gradients'" (learn2learn 0.2.0, algorithms/maml.py).
    frozen = any(not p.requires_grad for p in model.parameters())
    maml = l2l.algorithms.MAML(
        model, lr=size.inner_lr, first_order=case.first_order, allow_nograd=frozen
    )

    def step(episodes: list[BenchEpisode]) -> None:
        for ep in episodes:
            learner = maml.clone()  # clones every parameter, frozen ones too
            for _ in range(size.inner_steps):
                logits = learner(**model_inputs(ep.support, ep.n_way))
                learner.adapt(loss_fn(logits, ep.support["labels"]))
            logits = learner(**model_inputs(ep.query, ep.n_way))
            (loss_fn(logits, ep.query["labels"]) / len(episodes)).backward()

    return step
