"""`MetaAlgorithm`, the base every meta-learner extends (its config base, `MetaConfig`, lives in
`metanlp.meta.config`, and the shared helpers `task_loss`, `accuracy`, `model_mode` in
`metanlp.meta.helpers`; all are re-exported here).

A subclass says only what makes it different: which tensors adapt (`inner_names`), which are
meta-learned (`outer_names`), extra learned tensors (`extra`), the inner learning rates
(`inner_lr_schedule`), the starting fast weights (`initial_fast_weights`) and, if needed, the
outer loss (`outer_loss`) or the whole `meta_backward` (Reptile, ProtoNet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metanlp.meta import efficient, efficient_vmap, probe
from metanlp.meta.config import MetaConfig
from metanlp.meta.helpers import accuracy, model_mode, task_loss, use_eager_for_second_order
from metanlp.meta.inner import (
    InnerLoopResult,
    InnerOptimizer,
    LRSchedule,
    inner_loop,
)
from metanlp.meta.params import configure_trainable, select_parameters
from metanlp.models import HEAD_PARAMETER_NAMES, FewShotModel, model_inputs, task_rows


class MetaAlgorithm:
    """Base class of the meta-learners; default behaviour is MAML's (second or first order).

    Args:
        model (`FewShotModel`): the model to meta-train; its ``requires_grad`` flags are set so
            that exactly the inner ∪ outer tensors are trainable (the rest frozen, never copied).
        config (`MetaConfig`, *optional*): the algorithm's config (defaults when omitted).

    Trainer-facing API: `meta_parameters`, `meta_backward`, `adapt`, `predict_logits`,
    `set_epoch`, `state_dict` / `load_state_dict` (learned extras only), `to`.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MetaConfig]] = MetaConfig

    def __init__(self, model: FewShotModel, config: MetaConfig | None = None) -> None:
        if not isinstance(model, FewShotModel):
            raise TypeError(
                f"{type(self).__name__} needs a FewShotModel, got {type(model).__name__}."
            )
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.model, self.config = model, config
        self.epoch = 0
        self.inner_names = self.select_inner_names()
        self.outer_names = self.select_outer_names()
        head = set(HEAD_PARAMETER_NAMES)
        # An algorithm without an inner loop (ProtoNet: no inner names) never reads the head.
        if model.head_init == "zero" and self.inner_names and not head <= set(self.inner_names):
            raise ValueError(
                "head_init='zero' starts each episode from a zero head, so the head must adapt; "
                f"the inner set {self._short(self.inner_names)} lacks it (add the head or use head_init='random')."
            )
        configure_trainable(model, set(self.inner_names) | set(self.outer_names))
        self.extra: dict[str, nn.Parameter] = {}
        self.build_extra()
        self.optimizer = InnerOptimizer(
            config.inner_optimizer, config.inner_momentum, config.inner_betas, config.inner_eps
        )
        if self.may_use_second_order():
            use_eager_for_second_order(model)

    # ---- what a subclass may change -----------------------------------------------------
    def select_inner_names(self) -> list[str]:
        return select_parameters(self.model, self.config.params, top_layers=self.config.top_layers)

    def select_outer_names(self) -> list[str]:
        outer = self.config.outer_params
        names = (
            self.select_inner_names()
            if outer is None
            else select_parameters(self.model, outer, top_layers=self.config.top_layers)
        )
        if self.model.head_init == "zero":  # the head lives only in the fast weights
            names = [n for n in names if n not in HEAD_PARAMETER_NAMES]
        return names

    def build_extra(self) -> None:
        """Create learned extra tensors in ``self.extra`` (e.g. inner learning rates)."""

    def may_use_second_order(self) -> bool:
        return not self.config.first_order

    def second_order_now(self) -> bool:
        return not self.config.first_order

    def inner_lr_schedule(self, steps: int) -> LRSchedule:
        return float(self.config.inner_lr)

    def initial_fast_weights(
        self, support: Mapping[str, Tensor], n_way: int, *, training: bool
    ) -> dict[str, Tensor]:
        """φ_0: meta-learned tensors themselves (no copy) when training, detached views otherwise."""
        params = dict(self.model.named_parameters())
        outer = set(self.outer_names)
        fast = {}
        for name in self.inner_names:
            p = params[name]
            if self.model.head_init == "zero" and name in HEAD_PARAMETER_NAMES:
                fast[name] = torch.zeros_like(p, requires_grad=False)
            else:
                fast[name] = p if training and name in outer else p.detach()
        return fast

    def outer_loss(
        self, result: InnerLoopResult, query: Mapping[str, Tensor], n_way: int
    ) -> tuple[Tensor, Tensor]:
        """Query loss at φ_k and the query logits (MAML++ mixes in the per-step losses)."""
        logits = self.forward_with(result.fast, query, n_way)
        return task_loss(logits, query["labels"]), logits

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at each epoch start (MAML++ anneals with it)."""
        self.epoch = int(epoch)

    # ---- the engine's uses -----------------------------------------------------------------
    def forward_with(
        self, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
    ) -> Tensor:
        """Differentiable logits with ``fast`` replacing the adapted tensors (frozen ones are read in place).

        ``strict=False`` lets the dict hold only the adapted tensors; every other parameter and
        buffer is the module's own tensor (no copy). BERT encoders tie no weights, so
        ``tie_weights`` has nothing to propagate; a name that is not a parameter would be
        ignored here and then caught by the engine's unused-parameter error.
        """
        if efficient.PREFIX_KEY in batch:  # frozen lower layers already run for this episode
            return efficient.layered_forward(self.model, fast, batch, n_way)
        kwargs = model_inputs(batch)
        kwargs["n_way"] = n_way
        return functional_call(self.model, dict(fast), (), kwargs, strict=False)

    def run_inner(
        self,
        fast: dict[str, Tensor],
        support: Mapping[str, Tensor],
        n_way: int,
        *,
        steps: int,
        mode: str,
        query: Mapping[str, Tensor] | None = None,
        grad_scale: float | None = None,
    ) -> InnerLoopResult:
        """`inner_loop` on the support loss with this algorithm's rates and optimiser
        (``grad_scale``: see `inner_grad_scale`)."""
        step_fn = None
        if query is not None:

            def step_fn(f: dict[str, Tensor]) -> Tensor:
                return task_loss(self.forward_with(f, query, n_way), query["labels"])

        return self.inner(
            lambda f: task_loss(self.forward_with(f, support, n_way), support["labels"]),
            fast, steps=steps, mode=mode, grad_scale=grad_scale, step_loss_fn=step_fn,
            checkpointed=self.config.checkpointing == "steps",
        )  # fmt: skip

    def inner(
        self,
        loss_fn: Callable[[dict[str, Tensor]], Tensor],
        fast: dict[str, Tensor],
        *,
        steps: int,
        mode: str,
        grad_scale: float | None = None,
        step_loss_fn: Callable[[dict[str, Tensor]], Tensor] | None = None,
        checkpointed: bool = False,
    ) -> InnerLoopResult:
        """`inner_loop` of any loss with this algorithm's rate schedule, inner optimiser and loss
        scale: the one place those three are wired in (algorithms with their own inner loss,
        such as iMAML's proximal term or ANIL's head on cached features, call it too)."""
        loop = efficient.checkpointed_inner_loop if checkpointed else inner_loop
        return loop(
            loss_fn, fast, steps=steps, lr=self.inner_lr_schedule(steps), mode=mode,
            optimizer=self.optimizer, step_loss_fn=step_loss_fn,
            grad_scale=self.inner_grad_scale(grad_scale),
        )  # fmt: skip

    def eval_steps(self, steps: int | None) -> int:
        """Inner steps of an evaluation-time `adapt`: ``steps`` if given, else the config's
        ``eval_inner_steps``, else its ``inner_steps``."""
        if steps is not None:
            return steps
        if self.config.eval_inner_steps is not None:
            return self.config.eval_inner_steps
        return self.config.inner_steps

    def uses_step_losses(self) -> bool:
        return False

    def inner_grad_scale(self, grad_scale: float | None) -> float | None:
        """The inner loop's loss scale: the caller's (the trainer's fp16 dynamic scale) when
        given, else the config's fixed ``grad_scale`` (``None``: no scaling)."""
        return self.config.grad_scale if grad_scale is None else grad_scale

    # ---- trainer-facing API -------------------------------------------------------------------
    def named_meta_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        params = dict(self.model.named_parameters())
        for name in self.outer_names:
            yield name, params[name]
        # Extras without a gradient (running statistics such as the decomposed learner's
        # transition counts) are state, saved by `state_dict`, not optimised.
        yield from ((n, p) for n, p in self.extra.items() if p.requires_grad)

    def meta_parameters(self) -> list[nn.Parameter]:
        """The tensors the outer optimiser updates (model tensors of the outer set + extras)."""
        return [p for _, p in self.named_meta_parameters()]

    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        """Accumulate ``scale ×`` this task's meta-gradient into ``.grad``; return task metrics.

        ``grad_scale`` scales the inner loop's support loss (fp16 loss scaling, see `inner_loop`);
        ``None`` uses the config's."""
        support, query, n_way = self.unpack(episode)
        mode = "second_order" if self.second_order_now() else "first_order"
        with model_mode(self.model, self.config.train_dropout), efficient.training_context(self):
            support, query = efficient.maybe_cache_prefix(self, support, query)
            fast = self.initial_fast_weights(support, n_way, training=True)
            result = self.run_inner(
                fast, support, n_way, steps=self.config.inner_steps, mode=mode,
                query=query if self.uses_step_losses() else None, grad_scale=grad_scale,
            )  # fmt: skip
            loss, logits = self.outer_loss(result, query, n_way)
        params = [p for p in self.meta_parameters() if p.requires_grad]
        if params and loss.requires_grad:
            torch.autograd.backward(loss * scale, inputs=params)
        return self.metrics(loss, logits, query, result)

    @property
    def batches_tasks(self) -> bool:
        """Whether `meta_backward_batch` runs a meta-batch in one pass (``task_batching="vmap"``)
        rather than task by task; the trainer then draws the batch's episodes together."""
        return self.config.task_batching == "vmap"

    def vmap_problems(self, grad_scale: float | None = None) -> list[str]:
        """Why this algorithm cannot take the batched ``vmap`` path (empty list: it can)."""
        cls = type(self)
        custom = [
            name
            for name in ("meta_backward", "outer_loss", "initial_fast_weights", "run_inner")
            if getattr(cls, name) is not getattr(MetaAlgorithm, name)
        ]
        problems = [f"{cls.__name__} overrides {custom}"] if custom else []
        if self.uses_step_losses():
            problems.append("it uses multi-step query losses")
        if self.optimizer.kind != "sgd":
            problems.append(f"inner_optimizer={self.optimizer.kind!r} (only 'sgd')")
        if self.inner_grad_scale(grad_scale) is not None:
            problems.append("grad_scale is set (fp16 loss scaling)")
        if self.config.checkpointing != "none":
            problems.append("checkpointing is on (vmap keeps every task's graph at once)")
        return problems

    def meta_backward_batch(
        self, episodes: list[Any], scale: float = 1.0, *, grad_scale: float | None = None
    ) -> list[dict[str, float]]:
        """`meta_backward` of each episode; one ``vmap`` pass when `batches_tasks`."""
        if not self.batches_tasks:
            return [self.meta_backward(e, scale, grad_scale=grad_scale) for e in episodes]
        problems = self.vmap_problems(grad_scale)
        if problems:
            raise ValueError(
                "task_batching='vmap' supports the plain MAML path (MAML, FOMAML, Meta-SGD with "
                f"SGD inner steps); here {'; '.join(problems)}. Use task_batching='loop'."
            )
        return efficient_vmap.vmap_meta_backward(self, episodes, scale)

    def adapt(
        self, support: Mapping[str, Tensor], n_way: int, steps: int | None = None
    ) -> dict[str, Tensor]:
        """Adapt to a support set for evaluation: deterministic, no graph kept, detached fast weights."""
        steps = self.eval_steps(steps)
        support = self.to_device(support)
        with model_mode(self.model, False):
            (support,) = efficient.maybe_cache_prefix(self, support)
            fast = self.initial_fast_weights(support, n_way, training=False)
            fast = self.task_head({n: t.detach() for n, t in fast.items()}, n_way)
            fast = self.run_inner(fast, support, n_way, steps=steps, mode="no_graph").fast
            return self.task_head(fast, n_way, complete=True)

    def task_head(
        self, fast: Mapping[str, Tensor], n_way: int, *, complete: bool = False
    ) -> dict[str, Tensor]:
        """``fast`` with a head of exactly ``n_way`` rows (`metanlp.models.task_rows`).

        The meta-learned (or zero) ``max_ways`` rows give the task's rows: the first ``n_way``,
        repeated in order when the task has more classes, so adaptation has no class ceiling.
        A prototype head already has ``n_way`` rows. ``complete=True`` also adds the model's
        own head (detached, as task rows) when ``fast`` has none (an inner set without the
        head), so every adapted task carries its own head.
        """
        own = dict(self.model.named_parameters())
        out = dict(fast)
        for name in HEAD_PARAMETER_NAMES:
            if name in out:
                out[name] = task_rows(out[name], n_way)
            elif complete:
                out[name] = task_rows(own[name].detach(), n_way)
        return out

    @torch.no_grad()
    def predict_logits(
        self, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
    ) -> Tensor:
        """Logits of ``batch`` under adapted fast weights, in eval mode and without a graph.

        Fast weights holding a linear probe (the policy's ``"frozen-lr"`` choice,
        `metanlp.meta.probe`) score the frozen encoder's normalised embedding with it.
        """
        if probe.has_probe(fast):
            return probe.probe_logits(self.model, fast, self.to_device(batch), n_way)
        with model_mode(self.model, False):
            return self.forward_with(fast, self.to_device(batch), n_way)

    def state_dict(self) -> dict[str, Tensor]:
        """Learned extra tensors (e.g. ``inner_lr.<param name>``); the model saves its own."""
        return {k: v.detach().clone() for k, v in self.extra.items()}

    @property
    def uses_type_names(self) -> bool:
        """Whether `adapt` reads the entity types' names from the support batch (the learner
        adds them, see `metanlp.meta.name_typer.encode_type_names`)."""
        return False

    def optional_extras(self) -> set[str]:
        """Extras a learner saved by an earlier version may lack; loading it drops them."""
        return set()

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for k in self.optional_extras() - set(state):
            del self.extra[k]
        if set(state) != set(self.extra):
            raise ValueError(
                f"{type(self).__name__} state has keys {self._short(sorted(state))}, expected "
                f"{self._short(sorted(self.extra))}: was it saved by the same algorithm/params?"
            )
        with torch.no_grad():
            for k, v in state.items():
                if v.shape != self.extra[k].shape:
                    raise ValueError(
                        f"{k}: saved shape {tuple(v.shape)} != {tuple(self.extra[k].shape)}."
                    )
                self.extra[k].copy_(v)

    def to(self, device: torch.device | str) -> MetaAlgorithm:
        """Move the learned extras in place (same Parameter objects; the model is moved by its owner)."""
        for v in self.extra.values():
            v.data = v.data.to(device)
        return self

    # ---- helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    def to_device(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def unpack(self, episode: Any) -> tuple[dict[str, Tensor], dict[str, Tensor], int]:
        try:
            support, query = episode.support, episode.query
            # NER heads need one row per tag (O included): Episode.num_labels, not n_way types.
            n_way = int(getattr(episode, "num_labels", episode.n_way))
        except AttributeError as err:
            raise TypeError(
                f"meta_backward needs an episode with .support, .query and .n_way (metanlp.episodes.Episode); got {type(episode).__name__}."
            ) from err
        return self.to_device(support), self.to_device(query), n_way

    def metrics(
        self,
        loss: Tensor,
        logits: Tensor,
        query: Mapping[str, Tensor],
        result: InnerLoopResult | None,
    ) -> dict[str, float]:
        out = {"query_loss": float(loss.detach()), "query_acc": accuracy(logits, query["labels"])}
        if result is not None and result.support_losses:
            out["support_loss"] = result.support_losses[0]
            out["inner_skipped"] = float(result.skipped_steps)
        return out

    @staticmethod
    def _short(names: list[str]) -> str:
        return f"{names[:4]}{' ...' if len(names) > 4 else ''}"
