"""Episode-local NER tags (IO or IOB2) and the way back from sub-token predictions to words."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


def episode_tag_names(label_names: Sequence[str], scheme: str) -> list[str]:
    """Tag id -> tag string for an episode whose types are ``label_names`` (in episode order).

    Example:
        ```python
        >>> episode_tag_names(["person", "company"], "io")
        ['O', 'person', 'company']
        >>> episode_tag_names(["person"], "iob2")
        ['O', 'B-person', 'I-person']
        ```
    """
    if scheme == "io":
        return ["O", *label_names]
    if scheme == "iob2":
        return ["O", *[f"{p}-{t}" for t in label_names for p in ("B", "I")]]
    raise ValueError(f"Unknown NER tag scheme {scheme!r}; use 'io' or 'iob2'.")


def sentence_tags(
    spans: Sequence[tuple[int, int, int]],
    n_words: int,
    source_types: Sequence[str],
    label_names: Sequence[str],
    scheme: str,
) -> list[str]:
    """Per-word tag strings of one sentence; mentions of types outside the episode become ``O``."""
    tags = ["O"] * n_words
    keep = set(label_names)
    for type_id, start, end in spans:
        name = source_types[type_id]
        if name not in keep:
            continue
        for i in range(start, end):
            tags[i] = name if scheme == "io" else f"{'B' if i == start else 'I'}-{name}"
    return tags


def entity_windows(
    word_lengths: Sequence[int], word_labels: Sequence[int], budget: int
) -> list[tuple[int, int]]:
    """Word windows ``[start, end)`` of at most `budget` sub-tokens that cover every mention.

    Plain truncation keeps a prefix and can cut off a support sentence's only mention of a type,
    which leaves that type without a prototype. A sentence that fits is one window ``(0, n)``;
    one that does not is split greedily: the first window is the prefix, and each later window
    starts at the first labelled word not yet covered. Words between windows that hold no
    mention are dropped.

    Args:
        word_lengths: Sub-tokens per word (without special tokens).
        word_labels: Tag id per word; 0 is ``O``.
        budget: Sub-tokens available (``max_length`` minus the special tokens).

    Returns:
        The windows, in order; each holds at least one word (an over-long word is kept whole
        and truncated by the tokenizer).

    Example:
        ```python
        >>> entity_windows([1, 1, 1, 1, 1], [1, 0, 0, 0, 2], budget=3)
        [(0, 3), (4, 5)]
        >>> entity_windows([1, 1, 1], [0, 1, 0], budget=3)
        [(0, 3)]
        ```
    """
    n = len(word_lengths)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and used + word_lengths[end] <= budget:
            used += word_lengths[end]
            end += 1
        end = max(end, start + 1)
        windows.append((start, end))
        start = next((i for i in range(end, n) if word_labels[i]), n)
    return windows


def support_windows(
    tokenizer: Any, words: Sequence[str], word_labels: Sequence[int], max_length: int
) -> list[tuple[int, int]]:
    """`entity_windows` of one sentence for a tokenizer and ``max_length`` (specials included)."""
    pieces = tokenizer(
        list(words), is_split_into_words=True, add_special_tokens=False, verbose=False
    )
    lengths = [0] * len(words)
    for w in pieces.word_ids():
        if w is not None:
            lengths[w] += 1
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    return entity_windows(lengths, word_labels, budget)


def align_word_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Sub-token labels: the first sub-token of each word gets its label, the rest ``-100``."""
    labels = []
    previous = None
    for w in word_ids:
        labels.append(IGNORE_INDEX if w is None or w == previous else int(word_labels[w]))
        previous = w
    return labels


def word_start_mask(
    word_ids: Sequence[Sequence[int | None]], shape: tuple[int, ...] | torch.Size
) -> torch.Tensor:
    """``(B, T)`` bool mask, True at the first sub-token of every word (the labelled positions).

    Example:
        ```python
        >>> word_start_mask([[None, 0, 0, 1, None]], (1, 5))
        tensor([[False,  True, False,  True, False]])
        ```
    """
    mask = torch.zeros(tuple(shape), dtype=torch.bool)
    for b, ids in enumerate(word_ids):
        for t, label in enumerate(align_word_labels(ids, [0] * (len(ids) + 1))):
            mask[b, t] = label != IGNORE_INDEX
    return mask


def word_predictions(
    token_predictions: Sequence[int] | torch.Tensor,
    word_ids: Sequence[int | None],
    n_words: int | None = None,
    fill: int = 0,
) -> list[int]:
    """Turn one example's sub-token predictions into one prediction per word.

    Each word takes the prediction at its first sub-token (the position that carried its label).
    Words with no sub-token left (cut by truncation, or characters the tokenizer drops) get
    ``fill`` (tag id 0, ``"O"``), so the result always has one entry per word.

    Args:
        token_predictions (`Sequence[int]` or `torch.Tensor` of shape ``(T,)``): Tag ids per position.
        word_ids (`Sequence[int | None]`): Word index per position, as in ``Episode.query_word_ids[b]``.
        n_words (`int`, *optional*): Number of words; defaults to the largest word index + 1.
        fill (`int`, defaults to 0): Tag id for words without a sub-token.
    """
    if isinstance(token_predictions, torch.Tensor):
        token_predictions = token_predictions.tolist()
    if n_words is None:
        n_words = max((w for w in word_ids if w is not None), default=-1) + 1
    out = [fill] * n_words
    seen = set()
    for position, w in enumerate(word_ids):
        if w is None or w in seen or w >= n_words:
            continue
        seen.add(w)
        out[w] = int(token_predictions[position])
    return out


def episode_word_tags(episode, predictions: torch.Tensor, split: str = "query") -> list[list[str]]:
    """Word-level tag strings for a whole NER episode from ``(B, T)`` ids or ``(B, T, C)`` logits.

    Example:
        ```python
        >>> logits = model(**{k: v for k, v in episode.query.items() if k != "labels"}, n_way=...)
        >>> predicted = episode_word_tags(episode, logits)  # compare with episode.query_targets
        ```
    """
    if split not in ("support", "query"):
        raise ValueError(f"split={split!r}; use 'support' or 'query'.")
    if episode.kind != "ner":
        raise ValueError(f"episode_word_tags needs an NER episode, got kind={episode.kind!r}.")
    if predictions.dim() == 3:
        predictions = predictions.argmax(dim=-1)
    inputs = getattr(episode, f"{split}_inputs")
    word_ids = getattr(episode, f"{split}_word_ids")
    if predictions.shape[0] != len(inputs):
        raise ValueError(
            f"predictions have {predictions.shape[0]} rows but the {split} set has {len(inputs)}."
        )
    return [
        [
            episode.tag_names[t]
            for t in word_predictions(predictions[b], word_ids[b], len(inputs[b]))
        ]
        for b in range(len(inputs))
    ]
