"""User inputs for `MetaLearner.adapt` and the adapted predictors: the checks that turn bad
input into a clear error (texts, labels, IOB2 / IO tags, word lists) and their tokenization."""

from __future__ import annotations

import unicodedata
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metanlp.episodes.tags import align_word_labels, support_windows

# control, format (zero-width), separators, and combining marks, which tokenizers strip with
# the accents (a text of combining marks alone would encode to nothing)
_INVISIBLE = ("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me")
_BAD_PREFIXES = ("S-", "E-", "U-", "L-")  # BIOES/BILOU: not IO, not IOB2


@dataclass
class TextTask:
    label_names: list[Any]
    label_ids: list[int]


@dataclass
class NERTask:
    tag_names: list[str]  # episode tags, IO scheme: ["O", type, ...]
    tag_ids: list[list[int]]
    iob2_output: bool


def has_visible_text(text: Any) -> bool:
    """Whether ``text`` is a string with a character that is not whitespace, a control or a
    format character (tokenizers drop those, leaving an empty input)."""
    return isinstance(text, str) and any(
        not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE for ch in text
    )


def check_texts(texts: Any, what: str = "texts", allow_empty: bool = False) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}.")
    if len(texts) == 0 and not allow_empty:
        raise ValueError(f"{what} is empty; give at least one text.")
    words = [i for i, t in enumerate(texts) if isinstance(t, (list, tuple))]
    if words:
        raise TypeError(
            f"{what} holds lists (positions {words[:10]}), as NER sentences do; this learner "
            "classifies texts (task='sequence'). Give one string per text, or load a token "
            "learner for NER: MetaLearner.from_pretrained(..., task='token')."
        )
    _check_unicode(texts, what)
    bad = [i for i, t in enumerate(texts) if not has_visible_text(t)]
    if bad:
        raise ValueError(
            f"{what} has {len(bad)} empty, non-string, combining-mark or "
            f"whitespace/control-character-only entries (positions {bad[:10]}); every text must "
            "be a string with visible characters."
        )
    return list(texts)


def _check_unicode(texts: Sequence[Any], what: str) -> None:
    """Refuse lone surrogates (text decoded with ``errors="surrogateescape"`` or cut from a
    UTF-16 pair): they are not Unicode text and no tokenizer can encode them."""
    bad = [
        i
        for i, t in enumerate(texts)
        if isinstance(t, str) and any("\ud800" <= ch <= "\udfff" for ch in t)
    ]
    if bad:
        raise ValueError(
            f"{what} at positions {bad[:10]} hold lone surrogate characters (not valid Unicode); "
            "read the file with its real encoding (e.g. encoding='utf-8', errors='replace')."
        )


def check_text_inputs(texts: Any, labels: Any) -> TextTask:
    """Validate a text-classification support set; label names keep their first-seen order."""
    texts = check_texts(texts)
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list (one label per text), got {type(labels).__name__}.")
    if len(labels) != len(texts):
        raise ValueError(
            f"Got {len(texts)} texts but {len(labels)} labels; give one label per text."
        )
    missing = [i for i, y in enumerate(labels) if y is None or _is_nan(y)]
    if missing:
        raise ValueError(
            f"Labels at positions {missing[:10]} are missing (None or NaN, e.g. empty cells of "
            "a table); label those examples or leave them out."
        )
    unhashable = [i for i, y in enumerate(labels) if not isinstance(y, Hashable)]
    if unhashable:
        raise TypeError(f"Labels at positions {unhashable[:10]} are unhashable (e.g. lists).")
    first: dict[Any, Any] = {}
    for y in labels:
        seen = first.setdefault(y, y)
        if type(seen) is not type(y):
            # 1 == True == 1.0 in Python: as dict keys they would become one class.
            raise ValueError(
                f"Labels {seen!r} ({type(seen).__name__}) and {y!r} ({type(y).__name__}) are "
                "equal in Python and would merge into one class; give every label the same type "
                "(e.g. all strings)."
            )
    names = list(first)
    if len(names) < 2:
        raise ValueError(
            f"All {len(labels)} examples have the label {names[0]!r}; a few-shot task needs at "
            "least 2 classes with examples each."
        )
    index = {n: i for i, n in enumerate(names)}
    return TextTask(label_names=names, label_ids=[index[y] for y in labels])


def _is_nan(value: Any) -> bool:
    """NaN of any float type (float, numpy, a 0-d tensor): never equal to itself, so as a label
    every NaN would be a class of its own."""
    try:
        return bool(value != value)
    except (TypeError, ValueError, RuntimeError):
        return False


def _split_tag(tag: str) -> tuple[str, str | None]:
    if tag == "O":
        return "O", None
    if tag[:2] in ("B-", "I-"):
        return tag[:1], tag[2:]
    return "", tag


def check_ner_inputs(
    token_lists: Any, tag_lists: Any, entity_types: Sequence[str] | None = None
) -> NERTask:
    """Validate an NER support set and map its tags to episode tag ids (IO scheme)."""
    if isinstance(token_lists, str) or not isinstance(token_lists, Sequence) or not token_lists:
        raise ValueError("token_lists must be a non-empty list of sentences (lists of words).")
    if not isinstance(tag_lists, Sequence) or len(tag_lists) != len(token_lists):
        n = len(tag_lists) if isinstance(tag_lists, Sequence) else type(tag_lists).__name__
        raise ValueError(
            f"Got {len(token_lists)} sentences but {n} tag lists; give one per sentence."
        )
    types: list[str] = []
    prefixed = False
    for i, (words, tags) in enumerate(zip(token_lists, tag_lists, strict=True)):
        check_words(words, i)
        if isinstance(tags, str) or len(tags) != len(words):
            raise ValueError(
                f"Sentence {i} has {len(words)} words but {len(tags) if not isinstance(tags, str) else 'a string of'} "
                "tags; give one tag per word."
            )
        for tag in tags:
            if (
                not isinstance(tag, str)
                or not tag
                or tag.startswith(_BAD_PREFIXES)
                or tag in ("B-", "I-")
            ):
                raise ValueError(
                    f"Unknown tag {tag!r} in sentence {i}; use 'O', IOB2 tags ('B-person', "
                    "'I-person') or IO tags (the bare type, 'person')."
                )
            prefix, etype = _split_tag(tag)
            prefixed = prefixed or prefix in ("B", "I")
            if etype is not None and etype not in types:
                types.append(etype)
    if entity_types is not None:
        unknown = sorted(set(types) - set(entity_types))
        if unknown:
            raise ValueError(
                f"Unknown tag type(s) {unknown}; entity_types allows {sorted(entity_types)}."
            )
        types = [t for t in entity_types if t in types]
    if not types:
        raise ValueError("No entity is tagged in the support set; tag at least one entity type.")
    tag_names = ["O", *types]
    index = {t: i for i, t in enumerate(tag_names)}
    tag_ids = [[index[_split_tag(t)[1] or "O"] for t in tags] for tags in tag_lists]
    return NERTask(tag_names=tag_names, tag_ids=tag_ids, iob2_output=prefixed)


def check_words(words: Any, i: int, allow_empty: bool = False) -> None:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise ValueError(f"Sentence {i} must be a list of words, got {words!r}.")
    if len(words) == 0 and not allow_empty:
        raise ValueError(f"Sentence {i} must be a non-empty list of words, got {words!r}.")
    _check_unicode(words, f"Words of sentence {i}")
    if not all(has_visible_text(w) for w in words):
        raise ValueError(
            f"Sentence {i} has empty, non-string or whitespace/control-character-only words: "
            f"{list(words)[:10]}; every word needs visible characters."
        )


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int, offset: int = 0
) -> dict[str, torch.Tensor]:
    """Tokenize ``texts``; a text of which the tokenizer keeps nothing but its special tokens
    (e.g. only U+FFFD replacement characters, which BERT's cleaner drops) is refused: every
    such text would get the same prediction. ``offset``: position of ``texts[0]`` among the
    user's texts (for the message, when they are encoded in batches).

    Raises:
        ValueError: naming the positions of those texts.
    """
    enc = tokenizer(
        list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    empty = (enc["attention_mask"].sum(1) <= specials).nonzero().flatten().tolist()
    if empty and len(texts):
        raise ValueError(
            f"texts at positions {[offset + i for i in empty[:10]]} have no content the "
            f"tokenizer keeps (only characters it drops, e.g. {texts[empty[0]][:20]!r}); give "
            "texts with words, or drop those."
        )
    return dict(enc)


def encode_ner(
    tokenizer: Any,
    token_lists: Sequence[Sequence[str]],
    tag_ids: Sequence[Sequence[int]] | None,
    max_length: int,
) -> tuple[dict[str, torch.Tensor], list[list[int | None]]]:
    """Tokenize word lists; label the first sub-token of each word (others -100).

    With labels (a support set), a sentence whose mentions pass ``max_length`` is split into
    windows that cover them all (`metanlp.episodes.tags.entity_windows`), so no tagged type
    loses its only example to truncation.
    """
    if tag_ids is not None:
        parts = [
            (list(w)[a:b], list(t)[a:b])
            for w, t in zip(token_lists, tag_ids, strict=True)
            for a, b in support_windows(tokenizer, w, t, max_length)
        ]
        token_lists, tag_ids = [p[0] for p in parts], [p[1] for p in parts]
    enc = tokenizer(
        [list(w) for w in token_lists],
        is_split_into_words=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
    )
    word_ids = [enc.word_ids(b) for b in range(len(token_lists))]
    batch = {k: v for k, v in enc.items()}
    if tag_ids is not None:
        batch["labels"] = torch.tensor(
            [align_word_labels(w, t) for w, t in zip(word_ids, tag_ids, strict=True)]
        )
    return batch, word_ids


def as_text_list(texts: Any, what: str = "texts") -> tuple[list[Any], bool]:
    """``(list, single)``: one string, or any ordered collection of them (a list, a tuple, a
    1-D numpy array, a pandas Series, a `datasets.Dataset` column); ``single`` for one string."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, np.ndarray):
        if texts.ndim != 1:
            raise ValueError(f"{what} is a numpy array of shape {texts.shape}; give a 1-D array.")
        return texts.tolist(), False
    if _is_dataset(texts):
        raise TypeError(
            f"{what} is a whole datasets.Dataset; pass one column of it, e.g. dataset['text']."
        )
    if hasattr(texts, "tolist") and not isinstance(texts, Sequence):  # pandas Series / Index
        return list(texts.tolist()), False
    if isinstance(texts, (Sequence, Iterable)) and hasattr(texts, "__len__"):
        if isinstance(texts, (Mapping, set, frozenset, bytes)):
            raise TypeError(
                f"{what} must be an ordered collection of strings, got {type(texts).__name__}."
            )
        return list(texts), False  # a list, a tuple, a datasets Column
    raise TypeError(f"{what} must be a string or a list of strings, got {type(texts).__name__}.")


def _is_dataset(value: Any) -> bool:
    return type(value).__name__ in ("Dataset", "IterableDataset", "DatasetDict") and hasattr(
        value, "column_names"
    )
