"""Turning a `MetaTrainerConfig` into the objects the trainer drives: model, algorithm, samplers.

The trainer never draws episodes itself: it gets samplers from `metanlp.episodes` built here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metanlp.meta.registry import algorithm_from_spec
from metanlp.models import build_model, check_max_length
from metanlp.training.config import MetaTrainerConfig


def build_algorithm(config: MetaTrainerConfig) -> Any:
    """The spec's algorithm on a fresh `metanlp.models.build_model` of ``config.model``."""
    attn = "sdpa" if config.attn_implementation == "auto" else config.attn_implementation
    model = build_model(config, config.model, attn_implementation=attn)
    return algorithm_from_spec(config, model)


def named_meta_parameters(algorithm: Any) -> dict[str, nn.Parameter]:
    """Name -> tensor of what the outer optimiser updates (adapter/head weights, learned rates)."""
    named = dict(algorithm.named_meta_parameters())
    if not named:
        raise ValueError(f"{type(algorithm).__name__} exposes no meta-parameters to train.")
    return named


def _sampler(
    source: dict[str, Any], config: MetaTrainerConfig, collator: Any, **kwargs: Any
) -> tuple[Any, float]:
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler, NERSampler

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
    from metanlp.episodes import EpisodeCollator, MixtureSampler

    if not config.data.train:
        raise ValueError(
            "data.train is empty: list at least one episode source (dataset, n_way, k_shot, ...)."
        )
    model = algorithm.model
    check_max_length(model.base_encoder, model.tokenizer, config.data.max_length, "data.max_length")
    collator = EpisodeCollator(model.tokenizer, config.data.max_length)
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
