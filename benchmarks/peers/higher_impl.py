"""higher 0.2.1: `higher.innerloop_ctx` with a `torch.optim.SGD` over the adapted tensors.

Second order keeps higher's graph (``track_higher_grads=True``); first order switches it off
and hands the query gradient at the adapted fast weights to the initial tensors, which is
FOMAML's meta-gradient (higher has no first-order mode of its own).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .workload import BenchEpisode, Case, Size, adapted_names, loss_fn, model_inputs


def make_stepper(model: nn.Module, case: Case, size: Size) -> Callable[[list[BenchEpisode]], None]:
    import higher

    names = adapted_names(model, case)
    params = dict(model.named_parameters())
    all_names = [n for n, _ in model.named_parameters()]
    inner_opt = torch.optim.SGD([params[n] for n in names], lr=size.inner_lr)

    def step(episodes: list[BenchEpisode]) -> None:
        for ep in episodes:
            with higher.innerloop_ctx(
                model,
                inner_opt,
                copy_initial_weights=False,
                track_higher_grads=not case.first_order,
            ) as (fmodel, diffopt):
                for _ in range(size.inner_steps):
                    logits = fmodel(**model_inputs(ep.support, ep.n_way))
                    diffopt.step(loss_fn(logits, ep.support["labels"]))
                logits = fmodel(**model_inputs(ep.query, ep.n_way))
                loss = loss_fn(logits, ep.query["labels"]) / len(episodes)
                if not case.first_order:
                    loss.backward()
                    continue
                fast = dict(zip(all_names, fmodel.fast_params, strict=True))
                grads = torch.autograd.grad(loss, [fast[n] for n in names])
                for n, g in zip(names, grads, strict=True):
                    params[n].grad = g if params[n].grad is None else params[n].grad + g

    return step
