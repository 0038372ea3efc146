"""The decomposed learner's fine-tuned span typer (``DecomposedConfig(typing="finetune")``).

Prototype typing (stage 2 of `metanlp.meta.decomposed`) only moves a linear head over fixed span
states; on types far from meta-training it stays near chance. The fine-tuned typer keeps the
detector and fine-tunes a typing model on the support set's gold spans:

1. spans are the mean of their words' states (the encoder's, as in prototype typing);
2. the head starts at the adapted Proto-MAML head (with ``typing_inner_steps=0`` exactly the
   prototype classifier ``W_n = 2c_n/τ, b_n = −‖c_n‖²/τ``);
3. with ``none_class``, one more row, "not an entity of these types", whose examples are the spans
   the adapted detector finds in the *support* sentences that are not gold mentions (its row
   starts at their prototype); predicted on a query span, the span is dropped;
4. `metanlp.meta.finetune.finetune_fast_weights` takes ``steps`` AdamW steps on the encoder
   subset ``params`` and the head (one fine-tuning loop in the package, given this loss).

The query is then encoded twice: by the meta-learned encoder for detection, by the fine-tuned one
for typing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metanlp.meta import spans as S
from metanlp.meta.efficient import layered_hidden
from metanlp.meta.finetune import FineTuneConfig, finetune_fast_weights

TYPER_DEFAULTS: dict[str, Any] = {"steps": 10, "lr": 1e-4, "head_lr": 1e-2, "params": "all",
                                  "top_layers": 2, "head_start": "adapted"}  # fmt: skip
"""Fine-tuning settings of the typer unless given: the best typing of gold spans on validation
types (company/facility/product with a learner meta-trained on person/geo-loc/other: 51.1 %
against 41.9 % for prototype typing, 30 episodes; see the NER log in ``benchmarks/README.md``)."""

Spans = list[list[tuple[int, int]]]
"""Per batch row, ``[start, end)`` word spans (word indices among the row's word starts)."""


def typer_config(value: Any) -> FineTuneConfig:
    """The typer's `FineTuneConfig`: ``None`` / ``True`` -> `TYPER_DEFAULTS`; an int -> that many
    steps; a mapping -> its fields over the defaults; a `FineTuneConfig` as is."""
    if value is None or value is True:
        value = {}
    elif isinstance(value, int) and not isinstance(value, bool):
        value = {"steps": value}
    if isinstance(value, Mapping):
        value = {**TYPER_DEFAULTS, **value}
    if not isinstance(value, (Mapping, FineTuneConfig)):
        raise TypeError(
            f"typing_finetune={value!r}: expected None, a step count, a dict of FineTuneConfig "
            "fields or a FineTuneConfig."
        )
    return FineTuneConfig.coerce(value)


def gold_word_spans(labels: Tensor) -> tuple[Spans, list[int]]:
    """Gold ``[start, end)`` word spans of each row of IO ``labels`` (``-100`` off word starts)
    and their types (0..N-1, rows in order)."""
    spans, types = [], []
    for row in labels.tolist():
        found = S.io_spans([y for y in row if y != S.IGNORE_INDEX])
        spans.append([(a, b) for _, a, b in found])
        types.extend(t - 1 for t, _, _ in found)
    return spans, types


def non_gold(detected: Spans, gold: Spans) -> Spans:
    """The detected spans that are not exactly a gold mention of their row."""
    return [[s for s in d if s not in set(g)] for d, g in zip(detected, gold, strict=True)]


def span_reps(hidden: Tensor, starts: Tensor, spans: Spans) -> Tensor:
    """``(S, H)`` mean word states of ``spans`` (rows in order), words at the ``starts`` mask."""
    reps = [
        S.span_means(hidden[r, starts[r].nonzero().flatten()], row)
        for r, row in enumerate(spans)
        if row
    ]
    return torch.cat(reps) if reps else hidden.new_zeros(0, hidden.shape[-1])


def finetune_typer(
    algorithm: Any,
    support: Mapping[str, Tensor],
    head: Mapping[str, Tensor],
    config: FineTuneConfig,
    none_spans: Spans | None = None,
    *,
    head_names: Sequence[str],
) -> dict[str, Tensor]:
    """Fine-tune the encoder subset ``config.params`` and the typing head on the support spans.

    Args:
        algorithm (`DecomposedNER`): Gives the model (and the device).
        support (`dict`): Encoded support batch with IO ``labels`` (on the algorithm's device).
        head (`dict`): The starting typing head ``{weight (N[+1], H), bias (N[+1],)}`` under
            ``head_names``; a last row beyond the N types is the "none" class.
        config (`FineTuneConfig`): Steps, rates, tensors (its ``head_start`` is applied).
        none_spans (`list`, *optional*): Per support row, the word spans of the "none" class.
        head_names (`Sequence[str]`): The names of the head's weight and bias (the decomposed
            learner's ``TYPING``).

    Returns:
        The tuned encoder tensors and head, detached.
    """
    labels = support["labels"]
    starts = labels != S.IGNORE_INDEX
    gold, types = gold_word_spans(labels)
    none_spans = none_spans or [[] for _ in gold]
    n_none = sum(len(r) for r in none_spans)
    n_rows, n_types = head[head_names[0]].shape[0], max(types, default=-1) + 1
    if n_rows != n_types + (1 if n_none else 0):
        raise ValueError(
            f"finetune_typer: a head of {n_rows} rows for {n_types} support types and "
            f"{n_none} none-class spans (it needs one row per type, plus one when there are "
            "none-class spans)."
        )
    target = torch.tensor(types + [n_rows - 1] * n_none, device=labels.device)
    weight, bias = head_names

    def loss(weights: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
        hidden = layered_hidden(algorithm.model, weights, batch)
        reps = torch.cat([span_reps(hidden, starts, gold), span_reps(hidden, starts, none_spans)])
        return F.cross_entropy(F.linear(reps, weights[weight], weights[bias]), target)

    return finetune_fast_weights(
        algorithm, support, n_rows, config, dict(head), loss_fn=loss, head_names=head_names
    )
