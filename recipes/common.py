"""What every recipe shares: its command line, run sizes, and the train → evaluate → report steps.

A recipe only states its data, its algorithm config and its test settings; the steps here call
`metanlp.training.MetaTrainer`, `metanlp.api.MetaLearner`, `metanlp.episodes` and
`metanlp.evaluation` and write what they return. Nothing here computes a metric.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from metanlp.training.config import MIXED_PRECISION_CHOICES

SIZES = ("smoke", "default", "full")


@dataclass(frozen=True)
class Size:
    """How big a run is: meta-training steps, validation and test episode counts.

    Args:
        max_steps (`int`): Meta (optimiser) steps.
        meta_batch_size (`int`): Tasks per meta-step.
        val_episodes (`int`): Fixed meta-validation episodes (0: no validation).
        test_episodes (`int`): Fixed test episodes per setting (each method sees the same ones).
        query (`int`): Query examples per class (NER: per entity type) in test episodes.
        max_length (`int`): Tokenizer truncation.
        finetune_baseline (`bool`): Also score the fine-tune baseline (costly on CPU).
        inner_steps (`int`, *optional*): Override the recipe's inner steps (training and
            evaluation); the smoke size uses 1.
        train_shots (`int`, *optional*): Override K and Q of the meta-training/validation sources.
    """

    max_steps: int
    meta_batch_size: int
    val_episodes: int
    test_episodes: int
    query: int = 8
    max_length: int = 64
    finetune_baseline: bool = False
    inner_steps: int | None = None
    train_shots: int | None = None


def parse_args(
    description: str, sizes: Mapping[str, Size], extra: Callable | None = None
) -> argparse.Namespace:
    """The recipe command line: ``--data``, ``--out``, ``--smoke`` / ``--full`` and overrides."""
    recipe = Path(sys.argv[0]).stem
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data", default=os.environ.get("METANLP_DATA_DIR", "data"),
                        help="folder of the built corpora (make data)")  # fmt: skip
    parser.add_argument("--out", default=f"outputs/{recipe}", help="where results are written")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smoke", action="store_true", help="tiny size, for the tests (seconds)")
    group.add_argument("--full", action="store_true", help="the GPU size (600 test episodes)")
    parser.add_argument("--max-steps", type=int, help="override the size's meta-training steps")
    parser.add_argument("--test-episodes", type=int, help="override the test episodes per setting")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and episodes")
    parser.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--precision", choices=MIXED_PRECISION_CHOICES,
                        help="meta-training's mixed_precision (default: the recipe's; 'auto' = "
                             "bf16 where a matmul probe measures it faster)")  # fmt: skip
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    args.size_name = "smoke" if args.smoke else "full" if args.full else "default"
    size = sizes[args.size_name]
    if args.max_steps is not None:
        size = replace(size, max_steps=args.max_steps)
    if args.test_episodes is not None:
        size = replace(size, test_episodes=args.test_episodes)
    args.size, args.recipe = size, recipe
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return args


def require_optional_corpus(args: argparse.Namespace, name: str, flag: str) -> None:
    """Exit with what to build when ``flag`` asks for an optional corpus that is not built."""
    from metanlp.corpora import CorpusError, load_corpus

    try:
        load_corpus(name, args.data)
    except CorpusError as err:
        sys.exit(f"{flag} needs the optional bigbench corpus in {args.data}: {err}")


def trainer_config(args: argparse.Namespace, name: str, **settings: Any) -> Any:
    """A `MetaTrainerConfig` from the recipe's settings, sized by ``args.size``."""
    from metanlp.training.config import MetaTrainerConfig

    size: Size = args.size
    data = dict(settings.pop("data"))
    val = data.get("val") if size.val_episodes else None
    if size.train_shots is not None:
        shots = {"k_shot": size.train_shots, "q_query": size.train_shots}
        data["train"] = [{**source, **shots} for source in data["train"]]
        val = {**val, **shots} if val else None
    if size.inner_steps is not None and settings.get("algorithm") != "protonet":
        steps = {"inner_steps": size.inner_steps, "eval_inner_steps": size.inner_steps}
        settings["algorithm_config"] = {**settings.get("algorithm_config", {}), **steps}
    data.update(val=val, val_episodes=max(size.val_episodes, 1), max_length=size.max_length,
                seed=args.seed, data_dir=str(args.data))  # fmt: skip
    return MetaTrainerConfig.from_dict(
        {
            "data": data,
            "max_steps": size.max_steps,
            "meta_batch_size": size.meta_batch_size,
            "eval_every": max(1, size.max_steps // 4),
            "output_dir": str(Path(args.out) / name / "train"),
            "overwrite_output_dir": True,  # a recipe always starts afresh in its --out folder
            "report_to": [],
            "progress_bar": not args.no_progress,
            "save_every": None,
            "save_total_limit": 1,
            "seed": args.seed,
            "cpu": args.device == "cpu",
            **settings,
            # --precision overrides the recipe's setting (a Namespace built by hand may lack it)
            **({"mixed_precision": args.precision} if getattr(args, "precision", None) else {}),
        }
    )


def processes_for(setting: str, meta_batch_size: int) -> int:
    """How many processes meta-train: ``setting`` is a count or ``"auto"``, which takes one per
    GPU, or without one per usable CPU core, capped to a divisor of ``meta_batch_size`` (each
    process runs an equal share of every meta-batch)."""
    if setting != "auto":
        wanted = int(setting) if str(setting).isdigit() else 0
        if wanted < 1 or meta_batch_size % wanted:
            raise SystemExit(
                f"--processes {setting}: give 'auto' or a divisor of the meta-batch size "
                f"({meta_batch_size}): each process runs an equal share of every meta-batch."
            )
        return wanted
    import torch

    devices = torch.cuda.device_count() or len(os.sched_getaffinity(0))
    return max(n for n in range(1, min(devices, meta_batch_size) + 1) if meta_batch_size % n == 0)


def launch_processes(setting: str, meta_batch_size: int) -> int:
    """Re-run this command under ``torchrun`` when `processes_for` says more than one process
    (it does not return then); inside such a run, or with one process, return the count.

    Every process meta-trains its share of each meta-batch (`docs/training.md`, several
    processes) and only the main one goes on to save and score (`meta_train`). On the 2-core
    CPU, 2 processes of one thread each are the fastest layout measured
    (`benchmarks/bench_build.py`)."""
    if "RANK" in os.environ:  # already one of torchrun's processes
        return int(os.environ.get("WORLD_SIZE", "1"))
    count = processes_for(setting, meta_batch_size)
    if count == 1:
        return 1
    cores = len(os.sched_getaffinity(0))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // count)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(count), sys.argv[0], *sys.argv[1:]]  # fmt: skip
    print(f"meta-training in {count} processes (--processes 1 for one): {' '.join(cmd)}",
          flush=True)  # fmt: skip
    os.execv(sys.executable, cmd)
    raise AssertionError("unreachable")  # pragma: no cover


def is_main_process() -> bool:
    """Whether this is the main (or only) process of a run: ``torchrun`` sets ``RANK``."""
    return int(os.environ.get("RANK", "0")) == 0


def meta_train(
    config: Any, datasets: Sequence[str] | None = None, **trainer_kwargs: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """Meta-train; returns (meta-trained learner, the same learner before training, run info).

    Under ``torchrun`` (several processes, `docs/training.md`) every process trains its share
    of each meta-batch and only the main one saves and returns the learners; the others return
    ``(None, None, info)`` (`is_main_process` says which one a process is before training).

    ``datasets`` names the training data in the model card when the samplers were passed in
    (``trainer_kwargs``: ``train_sampler``, ``val_sampler``) rather than built from the config.

    The "before" learner is a copy taken after the model is built and before the first meta-step:
    the same weights, head and adaptation rule, with no meta-training (the fair "start" baseline).
    """
    from metanlp.api import MetaLearner
    from metanlp.training import MetaTrainer

    trainer = MetaTrainer(config, **trainer_kwargs)
    info: dict[str, Any] = {"processes": trainer.world_size, "precision": trainer.mixed_precision}
    if not trainer.accelerator.is_main_process:  # a multi-process run: only the main one reports
        trainer.train()
        leave_process_group(trainer)
        return None, None, info
    start = copy.deepcopy(MetaLearner.from_trainer(trainer, datasets=datasets))
    start.config.meta_trained = False
    print(f"meta-training {config.algorithm} ({config.adapt}) for {config.max_steps} steps x "
          f"{config.meta_batch_size} tasks = {config.max_steps * config.meta_batch_size} episodes, "
          f"{trainer.world_size} process(es)")  # fmt: skip
    began = time.perf_counter()
    state = trainer.train()
    seconds = time.perf_counter() - began
    leave_process_group(trainer)  # what follows (saving, scoring) is this process's alone
    learner = MetaLearner.from_trainer(trainer, datasets=datasets)
    learner.save_pretrained(Path(config.output_dir).parent / "learner")
    info.update({
        "train_episodes": config.max_steps * config.meta_batch_size,
        "steps": state.step,
        "best_step": state.best_step,
        f"best_val_{config.metric_for_best}": state.best_metric,
        "seconds": round(seconds, 1),
        "learning_curve": str(Path(config.output_dir) / "learning_curve.png"),
    })  # fmt: skip
    print(f"meta-training done in {seconds:.0f} s (best validation step: {state.best_step})")
    return learner, start, info


def leave_process_group(trainer: Any) -> None:
    """After a multi-process run: wait for every process, then close the process group."""
    import torch.distributed as dist

    if trainer.world_size > 1 and dist.is_initialized():
        trainer.accelerator.wait_for_everyone()
        dist.destroy_process_group()


def methods_for(learner: Any, start: Any, size: Size) -> dict[str, Any]:
    """The methods every recipe compares: meta-trained, the same start untrained, baselines."""
    from metanlp.baselines import FineTuneBaseline, FrozenPrototypes

    name = learner.config.algorithm
    methods = {
        f"{name} meta-trained": learner,
        f"{name} no meta-training": start,
        "frozen prototypes": FrozenPrototypes(start.model),
    }
    if size.finetune_baseline:
        methods["fine-tune"] = FineTuneBaseline(start.model)
    return methods


def slug(setting: str) -> str:
    """A file-system name for a setting: ``"3-way 4-shot"`` -> ``"3-way_4-shot"``."""
    return re.sub(r"[^A-Za-z0-9.~-]+", "_", setting).strip("_")


def score_setting(
    args: argparse.Namespace,
    setting: str,
    sampler: Any,
    datasets: Mapping[str, Any],
    methods: Mapping[str, Any],
    tokenizer: Any,
) -> list[dict[str, Any]]:
    """Write ``size.test_episodes`` fixed episodes of `sampler` to a file, score every method on them."""
    from metanlp.episodes import load_episodes, save_episodes
    from metanlp.evaluation import comparison_table, evaluate

    n = args.size.test_episodes
    path = Path(args.out) / "episodes" / f"{slug(setting)}.json"
    save_episodes(path, sampler.specs(n), sampler, metadata={"max_length": args.size.max_length})
    episodes = load_episodes(path, datasets, tokenizer=tokenizer, max_length=args.size.max_length)
    first = episodes[0]
    print(f"\n[{setting}] {n} test episodes ({first.task}, {first.n_way}-way, "
          f"{len(first.query_targets)} queries each) x {len(methods)} methods")  # fmt: skip
    results = evaluate(methods, episodes, output_dir=Path(args.out) / slug(setting),
                       episode_set=setting, seed=args.seed, progress=not args.no_progress)  # fmt: skip
    print(comparison_table(results))
    return results
