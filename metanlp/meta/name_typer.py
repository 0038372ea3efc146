"""Typing spans by their entity types' names (``DecomposedConfig(typing="names")``).

With one or two support mentions per type, a prototype is one noisy tweet fragment; the type's
*name* ("company", "sports team") says more. Stage 2 of the decomposed learner can instead score
each span against the names, in the sentence-embedding space of the *pretrained* encoder
(MiniLM is a sentence-transformer: mean-pooled, normalised states):

1. a span's text is encoded alone (``[CLS] its sub-tokens [SEP]``, cut from the batch's own
   ``input_ids``: WordPiece splits a word the same alone as in context) and mean-pooled;
2. each type's name is encoded the same way (`encode_type_names`, on the learner's tokenizer;
   ``type_descriptions`` spells out names such as ``"sportsteam"``);
3. type ``n``'s prototype is ``normalise(name_n + w * sum of its support spans' embeddings)``
   (``w``: ``names_support_weight``; the name counts as ``1 / w`` support mentions, so more
   shots move the prototype further from the name);
4. a span gets the type of the most cosine-similar prototype; the logits are ``scale * cos``.

The pretrained encoder is the model with its meta-learned tensors replaced by copies taken
before meta-training (`DecomposedNER` keeps them as ``pretrained.<name>`` extras).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metanlp.models import mean_pool

NAME_IDS = "type_names_input_ids"
NAME_MASK = "type_names_attention_mask"
"""Support-batch keys of the encoded type names (`encode_type_names`), one row per type."""

NAME_SCALE = 20.0
"""Logits are ``NAME_SCALE * cosine`` (only the ``O`` threshold reads them as probabilities)."""


def describe_type(name: str, descriptions: Mapping[str, str] | None = None) -> str:
    """The words a type name is encoded as: ``descriptions[name]`` when given, else the name
    with ``-``, ``_``, ``.``, ``/`` and camelCase boundaries turned into spaces."""
    if descriptions and name in descriptions:
        return str(descriptions[name])
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return " ".join(re.split(r"[-_./\s]+", spaced)).strip() or name


def encode_type_names(
    tokenizer: Any, names: Sequence[str], descriptions: Mapping[str, str] | None = None
) -> dict[str, Tensor]:
    """``{NAME_IDS, NAME_MASK}``: the described names, tokenised (one padded row per type)."""
    if not names:
        raise ValueError("encode_type_names: no entity type names were given.")
    texts = [describe_type(n, descriptions) for n in names]
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    return {NAME_IDS: enc["input_ids"], NAME_MASK: enc["attention_mask"]}


def with_type_names(algorithm: Any, support: Mapping[str, Tensor], types: Sequence[str]) -> dict:
    """``support`` plus the encoded type names (on the algorithm's model's tokenizer and device)
    when the algorithm reads them (``algorithm.uses_type_names``), spelt by its config's
    ``type_descriptions``; else ``support`` as it is."""
    if not getattr(algorithm, "uses_type_names", False):
        return dict(support)
    descriptions = getattr(algorithm.config, "type_descriptions", None)
    names = encode_type_names(algorithm.model.tokenizer, list(types), descriptions)
    device = support["input_ids"].device
    return {**support, **{k: v.to(device) for k, v in names.items()}}


def span_token_batch(
    input_ids: Tensor, attention_mask: Tensor, starts: Tensor, spans: Sequence[Sequence[tuple]]
) -> dict[str, Tensor]:
    """``[CLS] sub-tokens [SEP]`` of every ``[start, end)`` word span (rows in order).

    A span runs from its first word's first sub-token to the next word's first sub-token, or for
    a row's last word to the row's ``[SEP]`` (its last attended position); ``[CLS]`` and
    ``[SEP]`` are the row's own first and last attended ids.
    """
    rows = []
    for r, row in enumerate(spans):
        if not row:
            continue
        length = int(attention_mask[r].sum())
        positions = starts[r].nonzero().flatten().tolist() + [length - 1]
        cls, sep = input_ids[r, 0], input_ids[r, length - 1]
        for a, b in row:
            pieces = input_ids[r, positions[a] : positions[b]]
            rows.append(torch.cat([cls.view(1), pieces, sep.view(1)]))
    if not rows:
        empty = input_ids.new_zeros(0, 2)
        return {"input_ids": empty, "attention_mask": empty}
    width = max(len(x) for x in rows)
    ids = input_ids.new_zeros(len(rows), width)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(rows):
        ids[i, : len(x)], mask[i, : len(x)] = x, 1
    return {"input_ids": ids, "attention_mask": mask}


def mean_pooled(hidden: Tensor, mask: Tensor) -> Tensor:
    """Unit-length mean of the attended states ``(B, H)`` (the sentence-transformer pooling)."""
    return F.normalize(mean_pool(hidden, mask), dim=-1)


def name_prototypes(names: Tensor, spans: Tensor, types: Tensor, weight: float) -> Tensor:
    """``(N, H)`` unit prototypes ``normalise(names_n + weight * sum of type n's spans)``."""
    sums = torch.zeros_like(names).index_add(0, types, spans) if len(spans) else 0.0
    return F.normalize(names + weight * sums, dim=-1)
