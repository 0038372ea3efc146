"""Baselines scored in the same harness as the meta-learners (see `metanlp.evaluation`).

Every method maps an `Episode` to query logits: ``(Q, N)`` for classification, ``(Q, T, C)`` for
NER (C = number of episode tags). The harness turns logits into predictions and scores them, so
a baseline and a meta-learner can never be scored differently.

- `FineTuneBaseline`: no meta-training; fine-tune a copy of the pretrained encoder with a fresh
  zero head on the support set (the usual "just fine-tune" few-shot baseline).
- `FrozenPrototypes`: nearest class centroid on frozen pretrained embeddings (ProtoNet's
  classifier with no training at all).
- `FrozenLogisticRegression`: logistic regression on frozen, mean-pooled, L2-normalised
  embeddings (SetFit's head without SetFit's contrastive body training).
- `NearestToken`: NER only, NNShot (Yang & Katiyar 2020): each query token takes the tag of
  its nearest support token.
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from metanlp.episodes.types import Episode
from metanlp.meta.base import model_mode
from metanlp.meta.probe import fit_probe, probe_features, probe_logits
from metanlp.meta.prototypes import (
    class_prototypes,
    flatten_labelled,
    squared_euclidean_logits,
)
from metanlp.models import FewShotModel, model_inputs


class EpisodeMethod(Protocol):
    """Anything the evaluation harness can score: adapts on the support, returns query logits."""

    def query_logits(self, episode: Episode) -> torch.Tensor: ...


@torch.no_grad()
def frozen_features(
    model: FewShotModel, episode: Episode
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Support and query features of ``model`` in eval mode, no graph (the frozen baselines)."""
    device = next(model.parameters()).device
    # model_mode restores every submodule's own flag (a plain .train(x) would not).
    with model_mode(model, False):
        support = model.embed(**model_inputs(episode.support, device))
        query = model.embed(**model_inputs(episode.query, device))
    return support, query, device


class FrozenPrototypes:
    """Nearest centroid on frozen embeddings: logits ``−‖f(x) − c_n‖²``, no parameter changes.

    Args:
        model (`FewShotModel`): Its `embed` gives pooled (sequence) or per-token (NER) features;
            the head is unused. Use ``pooling="mean"`` for sentence-transformers encoders.
    """

    def __init__(self, model: FewShotModel) -> None:
        self.model = model

    @torch.no_grad()
    def query_logits(self, episode: Episode) -> torch.Tensor:
        support, query, device = frozen_features(self.model, episode)
        labels = episode.support["labels"].to(device)
        prototypes = class_prototypes(support, labels, episode.num_labels)
        return squared_euclidean_logits(query, prototypes).cpu()


class NearestToken:
    """NNShot (Yang & Katiyar 2020): a query token's score for tag ``n`` is ``−‖f(x) − f(s)‖²``
    of its nearest support token ``s`` tagged ``n`` (``O`` included); no parameter changes.

    Args:
        model (`FewShotModel`): A token model (``task="token"``): frozen pretrained, or the
            encoder of a meta-trained learner (NNShot trains it like ProtoNet).

    Example:
        ```python
        >>> logits = NearestToken(learner.model).query_logits(episode)  # (Q, T, tags)
        ```
    """

    def __init__(self, model: FewShotModel) -> None:
        if model.task != "token":
            raise ValueError(
                f"NearestToken is for NER (task='token'); the model has task={model.task!r}."
            )
        self.model = model

    @torch.no_grad()
    def query_logits(self, episode: Episode) -> torch.Tensor:
        support, query, device = frozen_features(self.model, episode)
        tokens, tags = flatten_labelled(support, episode.support["labels"].to(device))
        distances = squared_euclidean_logits(query, tokens)  # (Q, T, S): −‖q − s‖²
        out = distances.new_full((*query.shape[:2], episode.num_labels), float("-inf"))
        for n in range(episode.num_labels):
            chosen = tags == n
            if bool(chosen.any()):
                out[..., n] = distances[..., chosen].max(-1).values
        return out.cpu()


class FineTuneBaseline:
    """Fine-tune a copy of the pretrained model on the support set, then predict the query.

    Every episode starts again from the pretrained weights (the given model is never modified):
    the encoder is copied, a zero-initialised head of ``num_labels`` rows is put on top, and
    ``steps`` full-batch AdamW steps are taken on the support cross-entropy. Dropout is off so
    the baseline is deterministic.

    Args:
        model (`FewShotModel`): The pretrained (not meta-trained) model.
        steps (`int`, defaults to 10): Optimiser steps on the support set.
        lr (`float`, defaults to 5e-5): Encoder learning rate.
        head_lr (`float`, defaults to 5e-3): Learning rate of the fresh head.
    """

    def __init__(
        self, model: FewShotModel, steps: int = 10, lr: float = 5e-5, head_lr: float = 5e-3
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps={steps}; fine-tuning needs at least 1 step.")
        self.model, self.steps, self.lr, self.head_lr = model, int(steps), float(lr), float(head_lr)

    def query_logits(self, episode: Episode) -> torch.Tensor:
        device = next(self.model.parameters()).device
        model = copy.deepcopy(self.model)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        model.head = nn.Linear(model.hidden_size, episode.num_labels).to(device)
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
        head_params = list(model.head.parameters())
        head_ids = {id(p) for p in head_params}
        body = [p for p in model.parameters() if id(p) not in head_ids]
        optimizer = torch.optim.AdamW(
            [{"params": body, "lr": self.lr}, {"params": head_params, "lr": self.head_lr}],
            weight_decay=0.0,
        )
        inputs = model_inputs(episode.support, device)
        labels = episode.support["labels"].to(device)
        for _ in range(self.steps):
            logits = model(**inputs)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return model(**model_inputs(episode.query, device)).cpu()


class FrozenLogisticRegression:
    """Logistic regression (scikit-learn, L2, ``C``) on frozen, L2-normalised sentence embeddings.

    The encoder is never trained; the classifier sees only the support set. Query logits are
    the classifier's log-probabilities, so the harness scores it like any other method. The
    classifier is the linear probe of `metanlp.meta.probe` (``fit_probe`` / ``probe_logits``),
    the same one the adaptation policy offers as its ``"frozen-lr"`` candidate.

    Args:
        model (`FewShotModel`): Sequence model with ``pooling="mean"`` (its head is unused).
        C (`float`, defaults to 1.0): Inverse regularisation strength (scikit-learn's default,
            as in SetFit's head).
        max_iter (`int`, defaults to 1000): L-BFGS iterations.
    """

    def __init__(self, model: FewShotModel, C: float = 1.0, max_iter: int = 1000) -> None:
        if model.task != "sequence":
            raise ValueError(
                "FrozenLogisticRegression is for text classification (task='sequence')."
            )
        self.model, self.C, self.max_iter = model, float(C), int(max_iter)

    def query_logits(self, episode: Episode) -> torch.Tensor:
        n = episode.num_labels
        features = probe_features(self.model, episode.support)
        probe = fit_probe(features, episode.support["labels"], n, C=self.C, max_iter=self.max_iter)
        logits = probe_logits(self.model, probe, episode.query, n)
        return torch.log_softmax(logits.double(), dim=-1).float().cpu()
