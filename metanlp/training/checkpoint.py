"""`MetaTrainer`'s checkpoints: the meta-parameters alone (``best/``) or everything needed to
resume exactly (``checkpoint-<step>``), written atomically with `metanlp.files.write_folder`
(no pickle: safetensors + JSON)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from metanlp.files import check_tensors, read_json, recover_folder, write_folder
from metanlp.training import state_io as ckpt
from metanlp.training.utils import load_scheduler_state, scheduler_state

WEIGHTS_NAME = "meta_parameters"
BEST_DIR = "best"
BEST_COPY = "best_meta_parameters"
"""A checkpoint's copy of ``best/``'s weights, when the best step is an earlier one."""
RESUMABLE_CHANGES = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "max_steps",
        "save_every",
        "save_total_limit",
        "log_every",
        "report_to",
        "progress_bar",
        "early_stopping_patience",
        "data.data_dir",
    }
)
"""Config keys a resumed run may change: where and how often it writes, and when it stops.
Any other difference (optimiser, data, algorithm, seeds, ...) makes resuming an error."""
_MISSING = object()

logger = logging.getLogger(__name__)


def _merge(defaults: Any, saved: Any) -> Any:
    """``saved`` with the keys it lacks taken from ``defaults``, nested dicts merged."""
    if not isinstance(defaults, dict) or not isinstance(saved, dict):
        return saved
    return {**defaults, **{k: _merge(defaults.get(k), v) for k, v in saved.items()}}


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 0.001, ...}``: nested dicts flattened to dotted keys."""
    if not isinstance(config, dict):
        return {prefix.rstrip("."): config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class CheckpointMixin:
    """Saving and loading for `MetaTrainer` (it provides the attributes used here)."""

    # -- checkpoints -------------------------------------------------------------------------------
    def _resolve_checkpoint(self, value: str | Path | bool) -> Path:
        if value is True:
            found = ckpt.latest_checkpoint(self.output_dir)
            if found is None:
                raise FileNotFoundError(
                    f"resume_from_checkpoint=True but {self.output_dir} has no checkpoint-* folder."
                )
            return found
        return Path(value)

    def check_resumed_config(self, path: Path) -> None:
        """Refuse to resume with settings that differ from the checkpoint's, which the restored
        optimiser, schedule and sampler would otherwise silently override or contradict.

        Settings in `RESUMABLE_CHANGES` (where to write, how often to log or save, ``max_steps``)
        may change; a new ``max_steps`` is applied and logged (the schedule is rebuilt with it).

        Raises:
            ValueError: listing each changed setting with the checkpoint's and the new value.
        """
        saved_file = path / "config.json"
        fix = ckpt.DAMAGED_FIX.format(folder=path)
        # A key the checkpoint lacks (written before the setting existed) had its default.
        defaults = json.loads(json.dumps(type(self.config)().to_dict()))
        saved = _flat(_merge(defaults, read_json(saved_file, fix)))
        current = _flat(json.loads(json.dumps(self.config.to_dict())))
        changed = [
            k
            for k in sorted(set(saved) | set(current))
            if saved.get(k, _MISSING) != current.get(k, _MISSING)
        ]
        refused = [k for k in changed if k not in RESUMABLE_CHANGES]
        if refused:
            diffs = "; ".join(
                f"{k}: {saved.get(k, '<unset>')!r} -> {current.get(k, '<unset>')!r}"
                for k in refused
            )
            raise ValueError(
                f"Cannot resume from {path}: the config differs from the one it was written "
                f"with ({diffs}). A resumed run keeps the checkpoint's optimiser, schedule and "
                f"data stream, so these changes would be ignored or inconsistent. Resume with "
                f"the checkpoint's settings (see {saved_file}), or start a new run in an empty "
                "output_dir to use the new ones."
            )
        if "max_steps" in changed:
            logger.warning(
                "Resuming from %s with max_steps %s -> %s: the learning-rate schedule now ends "
                "at step %s.", path, saved.get("max_steps"), self.config.max_steps,
                self.config.max_steps,
            )  # fmt: skip

    def save_meta_parameters(self, folder: Path) -> None:
        """Write the meta-parameters (adapter/head weights, learned inner rates) atomically."""
        if self.accelerator.is_main_process:
            tensors = {n: p.detach() for n, p in self.meta_params.items()}

            def write(tmp: Path) -> None:
                ckpt.save_state(tmp, WEIGHTS_NAME, tensors)
                self.config.to_json(tmp / "config.json")

            write_folder(folder, write)
        self.accelerator.wait_for_everyone()

    def load_meta_parameters(self, folder: Path) -> None:
        """Copy the meta-parameters saved in ``folder`` (``best/`` or a checkpoint) into the model.

        Raises:
            CorruptFileError: the file lacks tensors of this model, has others or other shapes.
        """
        if self.accelerator.is_main_process:
            recover_folder(folder)  # a kill between write_folder's two renames
        self.accelerator.wait_for_everyone()
        tensors = ckpt.load_state(folder, WEIGHTS_NAME)
        check_tensors(
            tensors,
            {n: p.shape for n, p in self.meta_params.items()},
            folder / f"{WEIGHTS_NAME}.safetensors",
            "was it written for this model and config? Resume with the config it was written "
            "with (its config.json), or start a new run in an empty output_dir.",
            finite=False,  # a diverged run's weights are still its weights
        )
        with torch.no_grad():
            for name, param in self.meta_params.items():
                param.copy_(tensors[name].to(param.device, param.dtype))

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` (weights, optimiser, schedule, scaler, RNG, sampler, config)."""
        per_rank = self._gather(
            [(self.rank, {"rng": ckpt.rng_state(), "sampler": self.train_sampler.state_dict()})]
        )
        name = f"{ckpt.CHECKPOINT_PREFIX}{self.state.step}"
        if self.accelerator.is_main_process:
            tensors = {n: p.detach() for n, p in self.meta_params.items()}

            def write(tmp: Path) -> None:
                ckpt.save_state(tmp, WEIGHTS_NAME, tensors)
                ckpt.save_state(tmp, "optimizer", self.optimizer.state_dict())
                ckpt.save_state(tmp, "scheduler", scheduler_state(self.scheduler))
                ckpt.save_state(tmp, "scaler", self.scaler.state_dict())
                ckpt.save_state(tmp, "trainer_state", dataclasses.asdict(self.state))
                for rank, state in per_rank:
                    ckpt.save_state(tmp, f"rank{rank}", state)
                self.config.to_json(tmp / "config.json")
                self._copy_best(tmp)

            write_folder(self.output_dir / name, write)
            ckpt.prune_checkpoints(self.output_dir, self.config.save_total_limit)
        self.accelerator.wait_for_everyone()
        return self.output_dir / name

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything `save_checkpoint` wrote (no pickle: safetensors + JSON), after
        `check_resumed_config` has compared the checkpoint's config with this trainer's."""
        path = Path(path)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"{path} is not a metanlp checkpoint (no trainer_state.json).")
        self.check_resumed_config(path)
        self.load_meta_parameters(path)
        self.optimizer.load_state_dict(ckpt.load_state(path, "optimizer"))
        load_scheduler_state(self.scheduler, ckpt.load_state(path, "scheduler"))
        self.scaler.load_state_dict(ckpt.load_state(path, "scaler"))
        self.state = type(self.state)(**ckpt.load_state(path, "trainer_state"))
        rank_file = path / f"rank{self.rank}.json"
        if not rank_file.is_file():
            raise ValueError(
                f"{path} was written by fewer processes than rank {self.rank}; resume with the same number of processes."
            )
        per_rank = ckpt.load_state(path, f"rank{self.rank}")
        ckpt.set_rng_state(per_rank["rng"])
        self.train_sampler.load_state_dict(per_rank["sampler"])
        if self.config.keep_best:
            self._restore_best(path)

    # -- best/ as of a checkpoint ------------------------------------------------------------------
    def _copy_best(self, tmp: Path) -> None:
        """Keep in a checkpoint the best weights as of its step when they are not its own
        (``best_step`` before the step), so resuming can put ``best/`` back as it was then."""
        best_step = self.state.best_step
        best = self.output_dir / BEST_DIR
        if not self.config.keep_best or best_step is None or best_step == self.state.step:
            return
        for suffix in (".json", ".safetensors"):
            source = best / f"{WEIGHTS_NAME}{suffix}"
            if source.is_file():
                shutil.copyfile(source, tmp / f"{BEST_COPY}{suffix}")

    def _restore_best(self, path: Path) -> None:
        """Make ``best/`` hold the weights of the checkpoint's ``best_step``: a run killed after
        a later ``best/`` write (and before its next checkpoint) left weights of a step the
        resumed run has not reached, which it would otherwise load and report as the best."""
        best = self.output_dir / BEST_DIR
        best_step = self.state.best_step
        if best_step is None:
            if self.accelerator.is_main_process and best.is_dir():
                shutil.rmtree(best)  # written after this checkpoint by the killed run
            self.accelerator.wait_for_everyone()
        elif best_step == self.state.step:
            self.save_meta_parameters(best)  # the checkpoint's own weights are the best
        elif (path / f"{BEST_COPY}.json").is_file():
            if self.accelerator.is_main_process:

                def write(tmp: Path) -> None:
                    for suffix in (".json", ".safetensors"):
                        source = path / f"{BEST_COPY}{suffix}"
                        if source.is_file():
                            shutil.copyfile(source, tmp / f"{WEIGHTS_NAME}{suffix}")
                    self.config.to_json(tmp / "config.json")

                write_folder(best, write)
            self.accelerator.wait_for_everyone()
