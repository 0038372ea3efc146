"""`MetaTrainer`: meta-training loop on Accelerate, with checkpoints, logs and early stopping.

Accelerate owns the device, the processes and mixed precision. The functional inner loop is not
wrapped in DDP: every process runs its share of the meta-batch's tasks, each task's meta-gradient
is accumulated into ``.grad`` by the algorithm, and the trainer all-reduces the sum once per
optimiser step. Episodes come from `metanlp.episodes`; validation scores from
`metanlp.training.validation`; checkpoints are written by `metanlp.training.state_io`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from metanlp.episodes.types import Episode
from metanlp.files import recover_folder
from metanlp.metrics.functional import format_score
from metanlp.training import state_io as ckpt
from metanlp.training.checkpoint import BEST_DIR, CheckpointMixin
from metanlp.training.config import MetaTrainerConfig
from metanlp.training.contract import TrainableAlgorithm, check_trainable
from metanlp.training.logs import (
    CURVE_FILE,
    METRICS_FILE,
    JsonlLogger,
    plot_learning_curve,
    read_jsonl,
)
from metanlp.training.precision import resolve_mixed_precision
from metanlp.training.setup import (
    build_algorithm,
    build_samplers,
    named_meta_parameters,
)
from metanlp.training.utils import (
    all_reduce_gradients,
    build_optimizer,
    build_scheduler,
    flat_hparams,
    has_accelerator,
    seeded_task,
)
from metanlp.training.validation import score_episode, summarize_scores

logger = logging.getLogger(__name__)

TRACKER_PROJECT = "metanlp"
"""Accelerate's tracker project: TensorBoard writes to ``<output_dir>/metanlp/``."""


@dataclass
class TrainerState:
    """Counters that a checkpoint restores (JSON)."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class MetaTrainer(CheckpointMixin):
    """Meta-train a `MetaAlgorithm` on episodes, the way `transformers.Trainer` trains a model.

    Args:
        config (`MetaTrainerConfig`): All settings; see ``docs/training.md``.
        algorithm (`MetaAlgorithm`, *optional*): Built from ``config`` when omitted.
        train_sampler (`EpisodeSampler`, *optional*), val_sampler (`EpisodeSampler`, *optional*):
            Built from ``config.data`` when omitted; a given train sampler must be built with this
            process's ``rank`` / ``world_size``.

    Example:
        ```python
        >>> from metanlp.training import MetaTrainer, MetaTrainerConfig
        >>> trainer = MetaTrainer(MetaTrainerConfig.from_yaml("default"))
        >>> output = trainer.train()            # or train(resume_from_checkpoint=True)
        >>> output.best_metric
        ```
    """

    def __init__(
        self,
        config: MetaTrainerConfig,
        algorithm: TrainableAlgorithm | None = None,
        train_sampler: Any | None = None,
        val_sampler: Any | None = None,
    ) -> None:
        self.config = config
        # Accelerate starts a multi-process CPU (gloo) run only with cpu=True.
        cpu = config.cpu or not has_accelerator()
        self.mixed_precision, precision_note = resolve_mixed_precision(config.mixed_precision, cpu)
        self.accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=self.mixed_precision,
            log_with=config.report_to or None,
            project_dir=config.output_dir,
        )
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.world_size:
            raise RuntimeError(
                f"{launched} processes were launched (WORLD_SIZE) but Accelerate runs {self.world_size}; "
                "each would train alone on the whole meta-batch. Launch with `accelerate launch` or "
                "`torchrun`, and on machines without GPUs set cpu: true."
            )
        if config.meta_batch_size % self.world_size:
            raise ValueError(
                f"meta_batch_size={config.meta_batch_size} is not a multiple of the {self.world_size} "
                "processes; every process must get the same number of tasks (change one of them)."
            )
        self.accelerator.print(precision_note)
        set_seed(config.seed)  # model init (head, LoRA) is the same on every process
        self.algorithm = check_trainable(
            algorithm if algorithm is not None else build_algorithm(config)
        )
        self.algorithm.model.to(self.accelerator.device)
        self.algorithm.to(self.accelerator.device)
        self.meta_params = named_meta_parameters(self.algorithm)
        if train_sampler is None or (val_sampler is None and config.data.val is not None):
            built_train, built_val = build_samplers(
                config, self.algorithm, self.rank, self.world_size
            )
            train_sampler = train_sampler or built_train
            val_sampler = val_sampler or built_val
        self.train_sampler, self.val_sampler = train_sampler, val_sampler
        self.optimizer = build_optimizer(self.meta_params.values(), config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, config.optimizer, config.max_steps)
        # fp16 needs loss scaling; bf16 and fp32 do not (a disabled scaler is a pass-through).
        self.scaler = torch.amp.GradScaler(
            self.accelerator.device.type, enabled=self.mixed_precision == "fp16"
        )
        self.state = TrainerState()
        self._val_episodes: list[tuple[int, Episode]] | None = None
        self.output_dir = Path(config.output_dir)

    # -- precision and devices -------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Accelerate's autocast; on CPU Accelerate leaves fp16 off, so torch's CPU autocast is used."""
        if self.mixed_precision == "fp16" and self.accelerator.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.float16)
        return self.accelerator.autocast()

    def _to_device(self, episode: Episode) -> Episode:
        device = self.accelerator.device
        move = lambda batch: {k: v.to(device) for k, v in batch.items()}  # noqa: E731
        return dataclasses.replace(
            episode, support=move(episode.support), query=move(episode.query)
        )

    # -- one optimiser step ------------------------------------------------------------------------
    def meta_step(self) -> dict[str, float]:
        """Consume ``meta_batch_size * gradient_accumulation_steps`` tasks and step the optimiser."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        tasks_per_step = config.meta_batch_size * config.gradient_accumulation_steps
        loss_scale = self._loss_scale()
        self.algorithm.set_epoch(self.state.step // (config.steps_per_epoch or config.eval_every))
        sums: dict[str, float] = {}
        scale = loss_scale / tasks_per_step
        local_tasks = tasks_per_step // self.world_size
        grad_scale = loss_scale if self.scaler.is_enabled() else None
        if self.algorithm.batches_tasks:
            # One batched pass over this process's tasks (per-task fast weights under vmap).
            specs = [self.train_sampler.next_spec() for _ in range(local_tasks)]
            episodes = [self._to_device(self.train_sampler.build(s)) for s in specs]
            with seeded_task(config.seed, specs[0].index, self.accelerator.device), self.autocast():
                results = self.algorithm.meta_backward_batch(
                    episodes, scale=scale, grad_scale=grad_scale
                )
        else:
            results = []
            for _ in range(local_tasks):
                spec = self.train_sampler.next_spec()
                episode = self._to_device(self.train_sampler.build(spec))
                with seeded_task(config.seed, spec.index, self.accelerator.device), self.autocast():
                    results.append(
                        self.algorithm.meta_backward(episode, scale=scale, grad_scale=grad_scale)
                    )
        for metrics in results:
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        params = list(self.meta_params.values())
        all_reduce_gradients(params, self.world_size)
        self.scaler.unscale_(self.optimizer)
        max_norm = config.optimizer.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(
            params, max_norm if max_norm is not None else math.inf
        )
        lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
        self.scaler.step(self.optimizer)  # skipped (and the scale lowered) when fp16 overflowed
        self.scaler.update()
        self.scheduler.step()
        out = self._mean_over_processes(sums, tasks_per_step)
        out.update(grad_norm=float(grad_norm), lr=lr)
        if self.scaler.is_enabled():
            out["loss_scale"] = loss_scale
        return out

    def _loss_scale(self) -> float:
        """fp16: the current dynamic loss scale, handed to the inner loop too (``grad_scale``:
        the engine multiplies the support loss by it and divides the inner gradients before the
        fast-weight update, so small fp16 gradients do not flush to zero); otherwise 1."""
        if not self.scaler.is_enabled():
            return 1.0
        # GradScaler creates its scale tensor lazily on the first scale() call.
        self.scaler.scale(torch.zeros((), device=self.accelerator.device))
        return float(self.scaler.get_scale())

    def _mean_over_processes(self, sums: dict[str, float], count: int) -> dict[str, float]:
        keys = sorted(sums)
        values = torch.tensor(
            [sums[k] for k in keys], dtype=torch.float64, device=self.accelerator.device
        )
        if self.world_size > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        return {k: float(v) / count for k, v in zip(keys, values.tolist(), strict=True)}

    # -- validation --------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Score the fixed meta-validation episodes (sharded over processes); returns means and CIs."""
        if self.val_sampler is None:
            raise ValueError(
                "No meta-validation data: set data.val in the config or pass val_sampler."
            )
        if self._val_episodes is None:
            n = self.config.data.val_episodes
            specs = self.val_sampler.specs(n)
            self._val_episodes = [
                (i, self.val_sampler.build(specs[i])) for i in range(self.rank, n, self.world_size)
            ]
        mine = []
        bar = tqdm(self._val_episodes, desc="meta-val", leave=False, disable=not self._show_bars())
        for index, episode in bar:
            mine.append(
                (index, score_episode(self.algorithm, self._to_device(episode), self.autocast))
            )
        scores = [s for _, s in sorted(self._gather(mine))]
        return summarize_scores(scores)

    def _gather(self, items: list) -> list:
        if self.world_size == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def _show_bars(self) -> bool:
        return self.config.progress_bar and self.accelerator.is_main_process

    # -- the loop ----------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | Path | bool | None = None) -> TrainerState:
        """Run meta-training to ``max_steps`` (or early stopping).

        Args:
            resume_from_checkpoint (`str`, `Path` or `bool`, *optional*): A checkpoint folder, or
                ``True`` for the newest one in ``output_dir``; the run then continues exactly as an
                uninterrupted one would. Without it, an ``output_dir`` holding an earlier run is
                refused unless ``config.overwrite_output_dir``.

        Returns:
            `TrainerState`: step, best metric and step, whether it stopped early, the history.

        Raises:
            FileExistsError: ``output_dir`` holds an earlier run (see above).
            TrainingInterrupted: ctrl-C was pressed; the run stopped after the step under way
                and wrote its checkpoint, which resuming continues from exactly.
        """
        config, acc = self.config, self.accelerator
        if acc.is_main_process:  # finish or clean what a killed run left half-written
            ckpt.recover_checkpoints(self.output_dir)
            recover_folder(self.output_dir / BEST_DIR)
        acc.wait_for_everyone()
        if not resume_from_checkpoint:
            self._claim_output_dir()
        resume_step = None
        if resume_from_checkpoint:
            self.load_checkpoint(self._resolve_checkpoint(resume_from_checkpoint))
            resume_step = self.state.step
        with _StopOnInterrupt() as interrupt:
            self._loop(resume_step, interrupt)
        if config.keep_best and self.state.best_step is not None:
            self.load_meta_parameters(self.output_dir / BEST_DIR)
        if acc.is_main_process:
            plot_learning_curve(
                read_jsonl(self.output_dir / METRICS_FILE), self.output_dir / CURVE_FILE
            )
        if config.report_to:
            acc.end_training()
        return self.state

    def _claim_output_dir(self) -> None:
        """A new run refuses an output_dir holding an earlier run's outputs (whose checkpoints
        a later resume would pick up, and whose log it would cut), unless
        ``overwrite_output_dir``: then exactly those outputs are deleted."""
        found = run_outputs(self.output_dir)
        # Every process has looked before any process deletes or writes (the main one's log
        # file would otherwise make a slower process find "outputs", wait at a barrier the main
        # one skipped, and hang both at the first all-reduce); so every process sees the same.
        self.accelerator.wait_for_everyone()
        if not found:
            return
        if not self.config.overwrite_output_dir:
            raise FileExistsError(
                f"output_dir {self.output_dir} holds an earlier run ({', '.join(p.name for p in found[:4])}"
                f"{', ...' if len(found) > 4 else ''}). Resume it (--resume / "
                "resume_from_checkpoint=True), pick a new output_dir, or set "
                "overwrite_output_dir: true to delete that run's outputs and start afresh."
            )
        if self.accelerator.is_main_process:
            for path in found:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self.accelerator.wait_for_everyone()

    def _loop(self, resume_step: int | None, interrupt: _StopOnInterrupt) -> None:
        config, acc = self.config, self.accelerator
        jsonl = (
            JsonlLogger(self.output_dir / METRICS_FILE, resume_step)
            if acc.is_main_process
            else None
        )
        if config.report_to:
            # Resuming: hide the events an interrupted run logged after its last checkpoint, as
            # the JSONL log drops them, so TensorBoard shows each step once.
            purge = {"tensorboard": {"purge_step": resume_step + 1}} if resume_step else None
            acc.init_trackers(
                TRACKER_PROJECT, config=flat_hparams(config.to_dict()), init_kwargs=purge
            )
        bar = tqdm(
            total=config.max_steps,
            initial=self.state.step,
            desc="meta-train",
            disable=not self._show_bars(),
        )
        shown: dict[str, str] = {}  # the progress bar's latest training loss and validation score
        while self.state.step < config.max_steps and not self.state.stopped_early:
            metrics = self.meta_step()
            self.state.step += 1
            step = self.state.step
            bar.update(1)
            shown["loss"] = f"{metrics.get('query_loss', float('nan')):.3f}"
            if step % config.log_every == 0:
                self._log(jsonl, "train", metrics)
            if step % config.eval_every == 0 or step == config.max_steps:
                scores = self._validate(jsonl)
                key = config.metric_for_best
                if scores is not None and key in scores:
                    shown[f"val_{key}"] = format_score(key, scores[key])
                    shown[f"best_{key}"] = format_score(key, self.state.best_metric)
            bar.set_postfix(shown)
            last = step == config.max_steps or self.state.stopped_early
            stop = self._interrupted(interrupt) and not last
            if last or stop or (config.save_every and step % config.save_every == 0):
                path = self.save_checkpoint()
            if stop:
                bar.close()
                if config.report_to:
                    acc.end_training()
                raise TrainingInterrupted(
                    f"interrupted after step {step}; checkpoint written to {path}. Resume with "
                    "--resume (resume_from_checkpoint=True)."
                )
        bar.close()

    def _interrupted(self, interrupt: _StopOnInterrupt) -> bool:
        """Whether ctrl-C was pressed (on any process: they all stop after the same step)."""
        if self.world_size == 1:
            return interrupt.requested
        flag = torch.tensor([float(interrupt.requested)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _log(self, jsonl: JsonlLogger | None, split: str, metrics: dict[str, float]) -> None:
        record = {"step": self.state.step, "split": split, **metrics}
        self.state.history.append(record)
        if jsonl is not None:
            jsonl.log(self.state.step, split, metrics)
        if self.config.report_to:
            self.accelerator.log(
                {f"{split}/{k}": v for k, v in metrics.items()}, step=self.state.step
            )

    def _validate(self, jsonl: JsonlLogger | None) -> dict[str, float] | None:
        """Score meta-validation, log it and track the best step; ``None`` without validation data."""
        if self.val_sampler is None:
            return None
        scores = self.evaluate()
        self._log(jsonl, "val", scores)
        key = self.config.metric_for_best
        if key not in scores:
            raise ValueError(
                f"metric_for_best={key!r} is not a validation metric; choose one of {sorted(scores)}."
            )
        if self.state.best_metric is None or self._better(scores[key], self.state.best_metric):
            self.state.best_metric, self.state.best_step = scores[key], self.state.step
            self.state.evals_without_improvement = 0
            if self.config.keep_best:
                self.save_meta_parameters(self.output_dir / BEST_DIR)
        else:
            self.state.evals_without_improvement += 1
            patience = self.config.early_stopping_patience
            if patience is not None and self.state.evals_without_improvement >= patience:
                self.state.stopped_early = True
        return scores

    def _better(self, value: float, best: float) -> bool:
        """Whether ``value`` improves on ``best`` in the direction of ``greater_is_better``
        (NaN never does)."""
        if math.isnan(value):
            return False
        return value > best if self.config.greater_is_better else value < best


class TrainingInterrupted(KeyboardInterrupt):
    """ctrl-C stopped `MetaTrainer.train` after a whole step, and a checkpoint of that step was
    written (the message names it); ``train(resume_from_checkpoint=True)`` continues exactly."""


class _StopOnInterrupt:
    """While active, the first ctrl-C (SIGINT) only asks the loop to stop after the current
    step, so that the checkpoint it writes is of a whole step; a second one interrupts at once.
    Outside the main thread (where signals cannot be caught) it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning(
            "ctrl-C: stopping after this step and writing a checkpoint (ctrl-C again to stop "
            "at once, without one)."
        )

    def __enter__(self) -> _StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def run_outputs(output_dir: str | os.PathLike) -> list[Path]:
    """What an earlier `MetaTrainer` run left in ``output_dir``: its checkpoints, ``best/``,
    metrics log, learning curve and TensorBoard folder (nothing else counts)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = list(ckpt.list_checkpoints(output_dir))
    found += [output_dir / n for n in (BEST_DIR, METRICS_FILE, CURVE_FILE, TRACKER_PROJECT)]
    return sorted(p for p in found if os.path.lexists(p))


__all__ = ["MetaTrainer", "MetaTrainerConfig", "TrainerState", "TrainingInterrupted"]
