"""Shared by the trainer tests: a small synthetic corpus, a tiny-run config, a 2-process worker.

The corpus is synthetic because the properties tested here (resume = uninterrupted, 2 processes
= 1 process, accumulation = bigger meta-batch) are about the training loop, not the data; the
model is the real MiniLM. Run as a script, this file is the worker `accelerate launch` starts.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

TOPICS = {
    "sports": "goal match team win score coach league",
    "tech": "code chip laptop software app server cloud",
    "food": "pizza bread cheese soup salad recipe oven",
    "music": "song band guitar album concert drums lyrics",
    "travel": "flight hotel beach trip airport luggage visa",
    "money": "bank loan stock price cash budget tax",
}
FILLER = "the a of and today really very just some more news people".split()


def build_corpus(data_dir: str | os.PathLike, name: str = "syn", per_class: int = 12) -> str:
    """Write a topic corpus (two domains) with ``save_to_disk`` under ``data_dir/name``."""
    from datasets import ClassLabel, Dataset, Features, Value

    rng = random.Random(0)
    rows = []
    for domain in ("d1", "d2"):
        for label, words in enumerate(TOPICS.values()):
            for i in range(per_class):
                # Two topic words among filler: learnable but not trivially separable.
                tokens = [rng.choice(words.split()) for _ in range(2)] + rng.sample(FILLER, 5)
                rng.shuffle(tokens)
                rows.append(
                    {"text": " ".join(tokens) + f" {domain}{i}", "label": label, "domain": domain}
                )
    features = Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=list(TOPICS)),
            "domain": Value("string"),
        }
    )
    Dataset.from_list(rows, features=features).save_to_disk(str(Path(data_dir) / name))
    return name


def tiny_config(data_dir: str | os.PathLike, output_dir: str | os.PathLike, **overrides: Any):
    """A MiniLM + LoRA second-order MAML run small enough for CI (seq 16, 3-way 2-shot)."""
    from metanlp.training.config import MetaTrainerConfig

    base: dict[str, Any] = {
        "adapt": "lora",
        "adapt_options": {"lora_r": 2, "lora_dropout": 0.1},
        "algorithm": "maml",
        "algorithm_config": {"inner_steps": 1, "inner_lr": 0.05},
        "data": {
            "train": [
                {
                    "dataset": "syn",
                    "n_way": 3,
                    "k_shot": 2,
                    "q_query": 2,
                    "classes": ["sports", "tech", "food", "music"],
                }
            ],
            "val": {
                "dataset": "syn",
                "n_way": 2,
                "k_shot": 2,
                "q_query": 3,
                "classes": ["travel", "money"],
            },
            "data_dir": str(data_dir),
            "max_length": 16,
            "val_episodes": 2,
        },
        "meta_batch_size": 2,
        "max_steps": 4,
        "eval_every": 2,
        "optimizer": {"lr": 3e-3, "warmup_steps": 1},
        "output_dir": str(output_dir),
        "report_to": [],
        "progress_bar": False,
        "seed": 3,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return MetaTrainerConfig.from_dict(base)


def meta_parameters(trainer) -> dict[str, Any]:
    return {name: p.detach().cpu().clone() for name, p in trainer.meta_params.items()}


def last_gradients(trainer) -> dict[str, Any]:
    """The all-reduced meta-gradient of the last step (still in ``.grad``, unscaled, clipped)."""
    return {name: p.grad.detach().cpu().clone() for name, p in trainer.meta_params.items()}


def _worker(config_json: str, result_path: str) -> None:
    """Train from a JSON config; the main process saves the meta-parameters and the history."""
    import torch
    from safetensors.torch import save_file

    from metanlp.training import MetaTrainer
    from metanlp.training.config import MetaTrainerConfig

    torch.set_num_threads(1)
    trainer = MetaTrainer(MetaTrainerConfig.from_json(config_json))
    state = trainer.train()
    if trainer.accelerator.is_main_process:
        tensors = {k: v.contiguous() for k, v in meta_parameters(trainer).items()}
        tensors.update({f"grad.{k}": g.contiguous() for k, g in last_gradients(trainer).items()})
        save_file(tensors, result_path)
        Path(result_path).with_suffix(".json").write_text(
            json.dumps({"history": state.history, "world_size": trainer.world_size})
        )


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
