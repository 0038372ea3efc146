"""TorchOpt 0.7.3, two ways: its functional API and its object-oriented `torchopt.MetaSGD`.

- ``make_stepper`` (functional): `torchopt.sgd` → ``init`` / ``update`` / `torchopt.apply_updates`
  on a dict of the adapted tensors, the model called with `torch.func.functional_call`.
- ``make_metasgd_stepper``: `torchopt.MetaSGD(model, lr)` updating the module in place, with
  `torchopt.extract_state_dict` / `recover_state_dict` between tasks. It differentiates every
  parameter of the module, so it fails when base weights are frozen (LoRA, top layers); it has
  no first-order mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from .workload import BenchEpisode, Case, Size, adapted_names, loss_fn, model_inputs


class NotApplicable(RuntimeError):
    """The implementation has no way to express this case (not a failure of the library)."""


def make_stepper(model: nn.Module, case: Case, size: Size) -> Callable[[list[BenchEpisode]], None]:
    import torchopt

    names = adapted_names(model, case)
    params = dict(model.named_parameters())
    opt = torchopt.sgd(lr=size.inner_lr)

    def support_loss(fast: dict, batch: dict, n_way: int) -> torch.Tensor:
        logits = functional_call(model, fast, (), model_inputs(batch, n_way), strict=False)
        return loss_fn(logits, batch["labels"])

    def step(episodes: list[BenchEpisode]) -> None:
        for ep in episodes:
            fast = {n: params[n] for n in names}
            state = opt.init(fast)
            for _ in range(size.inner_steps):
                loss = support_loss(fast, ep.support, ep.n_way)
                grads = torch.autograd.grad(
                    loss, list(fast.values()), create_graph=not case.first_order
                )
                updates, state = opt.update(
                    dict(zip(names, grads, strict=True)), state, inplace=False
                )
                fast = torchopt.apply_updates(fast, updates, inplace=False)
            (support_loss(fast, ep.query, ep.n_way) / len(episodes)).backward()

    return step


def make_metasgd_stepper(
    model: nn.Module, case: Case, size: Size
) -> Callable[[list[BenchEpisode]], None]:
    import torchopt

    if case.first_order:
        raise NotApplicable(
            "torchopt.MetaSGD always differentiates through the inner steps (no first-order mode)"
        )
    inner_opt = torchopt.MetaSGD(model, lr=size.inner_lr)

    def step(episodes: list[BenchEpisode]) -> None:
        net_state = torchopt.extract_state_dict(model)
        opt_state = torchopt.extract_state_dict(inner_opt)
        for ep in episodes:
            for _ in range(size.inner_steps):
                logits = model(**model_inputs(ep.support, ep.n_way))
                inner_opt.step(loss_fn(logits, ep.support["labels"]))
            logits = model(**model_inputs(ep.query, ep.n_way))
            (loss_fn(logits, ep.query["labels"]) / len(episodes)).backward()
            torchopt.recover_state_dict(model, net_state)
            torchopt.recover_state_dict(inner_opt, opt_state)

    return step
