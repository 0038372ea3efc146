"""Turning a `MetaTrainerConfig` into the objects the trainer drives: model, algorithm, samplers.

The trainer never draws episodes itself: it gets samplers from `metanlp.episodes` built here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .trainer_config import MetaTrainerConfig

ADAPT_OPTION_DEFAULTS: dict[str, Any] = {
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_targets": ["query", "value"],
    "top_layers": 2,
    "max_ways": 16,
    "head_init": "random",
}
"""Keys accepted in ``MetaTrainerConfig.adapt_options`` and their defaults."""


def adapt_options(config: MetaTrainerConfig) -> dict[str, Any]:
    """``adapt_options`` with defaults filled in; unknown keys are an error."""
    unknown = sorted(set(config.adapt_options) - set(ADAPT_OPTION_DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown key(s) {unknown} in adapt_options; allowed keys: {sorted(ADAPT_OPTION_DEFAULTS)}."
        )
    return {**ADAPT_OPTION_DEFAULTS, **config.adapt_options}


def build_model(config: MetaTrainerConfig) -> Any:
    """The `FewShotModel` of the config: encoder (+ LoRA when ``adapt="lora"``) and an N-way head."""
    from .models import FewShotModel

    options = adapt_options(config)
    peft_config = None
    if config.adapt == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=options["lora_r"],
            lora_alpha=options["lora_alpha"],
            lora_dropout=options["lora_dropout"],
            target_modules=list(options["lora_targets"]),
        )
    attn = "sdpa" if config.attn_implementation == "auto" else config.attn_implementation
    return FewShotModel.from_pretrained(
        config.model,
        attn_implementation=attn,
        task=config.task,
        pooling=config.pooling,
        max_ways=options["max_ways"],
        head_init=options["head_init"],
        peft_config=peft_config,
    )


def build_algorithm(config: MetaTrainerConfig) -> Any:
    """The registered algorithm ``config.algorithm`` on `build_model(config)`.

    ``adapt`` (and ``top_layers``) become the algorithm's ``params`` unless ``algorithm_config``
    sets them itself.
    """
    import metanlp.meta  # noqa: F401  (registers the algorithms)
    from metanlp.meta.registry import build_algorithm as build

    model = build_model(config)
    algo_config = {"params": config.adapt, **config.algorithm_config}
    if config.adapt == "top" and "top_layers" not in algo_config:
        algo_config["top_layers"] = adapt_options(config)["top_layers"]
    return build(config.algorithm, model, algo_config)


def named_meta_parameters(algorithm: Any) -> dict[str, nn.Parameter]:
    """Name -> tensor of what the outer optimiser updates (adapter/head weights, learned rates)."""
    named = dict(algorithm.named_meta_parameters())
    if not named:
        raise ValueError(f"{type(algorithm).__name__} exposes no meta-parameters to train.")
    return named


def move_algorithm(algorithm: Any, device: torch.device) -> None:
    """Put the model and the algorithm's own learned tensors on ``device``."""
    if isinstance(algorithm, nn.Module):
        algorithm.to(device)
        return
    algorithm.model.to(device)
    algorithm.to(device)


def _sampler(
    source: dict[str, Any], config: MetaTrainerConfig, collator: Any, **kwargs: Any
) -> tuple[Any, float]:
    from .corpora import load_corpus
    from .episodes import ClassificationSampler, NERSampler

    options = dict(source)
    if "dataset" not in options:
        raise ValueError(
            f"Episode source {source} has no 'dataset' key (a corpus name such as 'tweets')."
        )
    name = options.pop("dataset")
    weight = float(options.pop("weight", 1.0))
    dataset = load_corpus(name, config.data.data_dir)
    kind = options.pop("kind", "ner" if "ner_tags" in dataset.column_names else "classification")
    classes = {"classification": ClassificationSampler, "ner": NERSampler}
    if kind not in classes:
        raise ValueError(
            f"Episode source {name!r} has kind={kind!r}; choose one of {sorted(classes)}."
        )
    options.setdefault("name", name)
    return classes[kind](dataset, collator=collator, **options, **kwargs), weight


def build_samplers(
    config: MetaTrainerConfig, algorithm: Any, rank: int, world_size: int
) -> tuple[Any, Any]:
    """The meta-training sampler (this process's shard) and the meta-validation sampler.

    Returns:
        `(EpisodeSampler, EpisodeSampler | None)`: several training sources are mixed with their
        ``weight`` by `MixtureSampler`; validation is ``None`` when ``data.val`` is not set.
    """
    from .episodes import EpisodeCollator, MixtureSampler

    if not config.data.train:
        raise ValueError(
            "data.train is empty: list at least one episode source (dataset, n_way, k_shot, ...)."
        )
    collator = EpisodeCollator(algorithm.model.tokenizer, config.data.max_length)
    shard = {"seed": config.data.seed, "rank": rank, "world_size": world_size}
    if len(config.data.train) == 1:
        train, _ = _sampler(config.data.train[0], config, collator, **shard)
    else:
        parts = [_sampler(s, config, collator) for s in config.data.train]
        train = MixtureSampler(
            [s for s, _ in parts], [w for _, w in parts], collator=collator, **shard
        )
    val = None
    if config.data.val is not None:
        val, _ = _sampler(config.data.val, config, collator, seed=config.data.val_seed)
    return train, val
