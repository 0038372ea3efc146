"""Meta-validation during training: adapt on each fixed episode's support, score its query.

The trainer calls :func:`score_episode` on its shard of the fixed episodes and
:func:`summarize_scores` on the gathered results; it computes no metric itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from metanlp.episodes.types import Episode
from metanlp.meta.name_typer import with_type_names
from metanlp.metrics.functional import accuracy, mean_ci
from metanlp.names import with_resolved_names
from metanlp.training.contract import TrainableAlgorithm


def score_episode(
    algorithm: TrainableAlgorithm,
    episode: Episode,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Adapt ``algorithm`` to the support set and score the query set.

    Args:
        algorithm (`MetaAlgorithm`): Offers ``adapt(support, n_way)`` and ``predict_logits(fast, batch, n_way)``.
        episode (`Episode`): Already on the model's device.
        autocast (`Callable`, defaults to no autocast): Mixed-precision context factory.

    Returns:
        `dict[str, float]`: ``accuracy`` and ``loss`` (mean cross-entropy) on the query set; for
        NER, ``accuracy`` is token-level over labelled sub-tokens (dominated by ``O``), and the
        entity-level ``f1``, ``precision`` and ``recall`` of `metanlp.evaluation.episode_metrics`
        are added, so that ``metric_for_best: f1`` selects NER checkpoints on entities.
    """
    # The head size: N for classification, the episode's tags (O included) for NER.
    n_labels = episode.num_labels
    support = episode.support
    if getattr(episode, "kind", None) == "ner":  # a learner typing spans by name reads the names
        support = with_type_names(algorithm, support, episode.label_names)
    else:  # a learner that reads class names (metanlp.names) gets the episode's
        support, _ = with_resolved_names(algorithm, support, episode.label_names)
    with autocast():
        fast = algorithm.adapt(support, n_labels)
        with torch.no_grad():
            logits = algorithm.predict_logits(fast, episode.query, n_labels)
    labels = episode.query["labels"]
    logits = logits.float().reshape(-1, logits.shape[-1])
    flat = labels.reshape(-1)
    keep = flat != -100
    loss = F.cross_entropy(logits[keep], flat[keep]).item()
    predictions = logits[keep].argmax(-1).tolist()
    scores = {"accuracy": accuracy(predictions, flat[keep].tolist()), "loss": float(loss)}
    if episode.kind == "ner":
        # Imported here: evaluation imports the baselines, and through them the models.
        from metanlp.evaluation import episode_metrics

        scores.update(episode_metrics(episode, logits.reshape(*labels.shape, -1).cpu()))
    return scores


def summarize_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over episodes, with the 95% CI half-width as ``<metric>_ci95``."""
    if not scores:
        raise ValueError("No episode scores to summarise; the validation set is empty.")
    out: dict[str, float] = {}
    for key in scores[0]:
        stats = mean_ci([s[key] for s in scores])
        out[key] = stats["mean"]
        out[f"{key}_ci95"] = stats["ci"]
    out["episodes"] = float(len(scores))
    return out
