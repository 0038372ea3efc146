"""Validated, in-memory views of a `datasets.Dataset` that samplers draw rows from.

A source checks the schema once (clear errors for a missing or non-``ClassLabel`` column, empty
texts, malformed tags), keeps the columns it needs as Python lists / numpy arrays so sampling
never touches Arrow, and computes a content fingerprint that episode files are checked against.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset

logger = logging.getLogger(__name__)


def _column(dataset: Dataset, column: str) -> list[Any]:
    # Public indexing keeps select()/filter() index mappings; a whole-column slice is one Arrow
    # read (iterating the column would decode row by row, ~100x slower).
    if dataset.format.get("type") is not None:
        dataset = dataset.with_format(None)
    return list(dataset[column][:])


def _require_column(dataset: Dataset, column: str, role: str, name: str) -> None:
    if column not in dataset.column_names:
        raise ValueError(
            f"Dataset {name!r} has no {role} column {column!r}; its columns are "
            f"{dataset.column_names}. Pass the right name (e.g. {role}_column=...)."
        )


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def corpus_build_fingerprint(dataset: Dataset) -> str | None:
    """The ``fingerprint`` of the build stamp of the corpus folder ``dataset`` was loaded from
    (`metanlp.corpora.load_corpus`), or ``None`` for data built elsewhere or in memory."""
    from metanlp.corpora.common import read_stamp

    files = dataset.cache_files
    if not files:
        return None
    stamp = read_stamp(Path(files[0]["filename"]).parent)
    return stamp.get("fingerprint") if stamp else None


def _dataset_name(dataset: Dataset, name: str | None) -> str:
    """An explicit name, else the dataset's own, else the folder it was loaded from."""
    if name or dataset.info.dataset_name:
        return str(name or dataset.info.dataset_name)
    files = dataset.cache_files
    if files:
        return Path(files[0]["filename"]).parent.name
    return "dataset"


class ClassificationSource:
    """Text-classification rows: texts, ``ClassLabel`` labels and an optional group column.

    Args:
        dataset (`datasets.Dataset`): Needs a string text column and a ``ClassLabel`` label column.
        name (`str`, *optional*): Dataset name used in task names and episode files; defaults to
            ``dataset.info.dataset_name``.
        text_column (`str`, defaults to ``"text"``), label_column (`str`, defaults to ``"label"``).
        group_column (`str`, *optional*): A string column (e.g. ``"domain"``) defining task families.

    Rows whose text repeats an earlier row of the same class are left out of the pools, so a text
    can never sit in both the support and the query set of one episode.
    """

    kind = "classification"

    def __init__(
        self,
        dataset: Dataset,
        *,
        name: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        group_column: str | None = None,
    ) -> None:
        self.name = _dataset_name(dataset, name)
        _require_column(dataset, text_column, "text", self.name)
        _require_column(dataset, label_column, "label", self.name)
        feature = dataset.features[label_column]
        if not isinstance(feature, ClassLabel):
            raise TypeError(
                f"Column {label_column!r} of {self.name!r} is {feature!r}, not a ClassLabel; "
                f"cast it first, e.g. dataset.class_encode_column({label_column!r})."
            )
        self.columns = {"text_column": text_column, "label_column": label_column}
        self.label_names: list[str] = list(feature.names)
        self.texts: list[str] = _column(dataset, text_column)
        empty = [i for i, t in enumerate(self.texts) if not isinstance(t, str) or not t.strip()]
        if empty:
            raise ValueError(
                f"Dataset {self.name!r} has {len(empty)} empty or missing texts in column "
                f"{text_column!r} (rows {empty[:10]}{' ...' if len(empty) > 10 else ''}); "
                "filter them out first, e.g. dataset.filter(lambda r: r[...].strip() != '')."
            )
        self.labels = np.asarray(_column(dataset, label_column), dtype=np.int64)
        self.groups: np.ndarray | None = None
        if group_column is not None:
            _require_column(dataset, group_column, "group", self.name)
            values = _column(dataset, group_column)
            if any(v is None for v in values):
                raise ValueError(f"Column {group_column!r} of {self.name!r} has missing values.")
            self.groups = np.asarray([str(v) for v in values], dtype=object)
            self.columns["group_column"] = group_column
        group_part = None if self.groups is None else self.groups.tolist()
        self.fingerprint = _fingerprint(
            self.texts, self.labels.tolist(), self.label_names, group_part
        )
        self.corpus_fingerprint = corpus_build_fingerprint(dataset)
        self._unique = self._first_occurrences()

    def __len__(self) -> int:
        return len(self.texts)

    def _first_occurrences(self) -> np.ndarray:
        seen: set[tuple[int, str]] = set()
        keep = np.zeros(len(self.texts), dtype=bool)
        for i, (text, label) in enumerate(zip(self.texts, self.labels.tolist(), strict=True)):
            key = (label, text.strip())
            if key not in seen:
                seen.add(key)
                keep[i] = True
        dropped = int((~keep).sum())
        if dropped:
            logger.info("%s: %d repeated texts left out of the sampling pools.", self.name, dropped)
        return keep

    def pools(self, group: str | None = None) -> dict[str, np.ndarray]:
        """Class name -> row indices (duplicates left out), restricted to ``group`` if given."""
        mask = self._unique.copy()
        if group is not None:
            if self.groups is None:
                raise ValueError(f"{self.name!r} was loaded without a group column.")
            mask &= self.groups == group
        out = {}
        for class_id, class_name in enumerate(self.label_names):
            rows = np.flatnonzero(mask & (self.labels == class_id))
            if len(rows):
                out[class_name] = rows
        return out

    def group_values(self) -> list[str]:
        if self.groups is None:
            raise ValueError(f"{self.name!r} was loaded without a group column.")
        return sorted(set(self.groups.tolist()))


def _parse_tag_names(names: list[str], where: str) -> tuple[list[str], str, list[tuple[str, str]]]:
    """Split tag names into entity types; return (types, data scheme, per-tag (prefix, type))."""
    parsed: list[tuple[str, str]] = []
    for tag in names:
        if tag == "O":
            parsed.append(("O", ""))
        elif tag[:2] in ("B-", "I-") and len(tag) > 2:
            parsed.append((tag[0], tag[2:]))
        elif "-" in tag[:2]:
            raise ValueError(
                f"Tag {tag!r} of {where} is neither 'O' nor 'B-<type>'/'I-<type>'; "
                "metanlp reads IOB2 tags (or IO tags: bare type names)."
            )
        else:
            parsed.append(("", tag))
    prefixed = [p for p, _ in parsed if p in ("B", "I")]
    bare = [p for p, _ in parsed if p == ""]
    if prefixed and bare:
        raise ValueError(f"Tags of {where} mix IOB2 and bare type names: {names}.")
    scheme = "iob2" if prefixed else "io"
    types: list[str] = []
    for prefix, entity_type in parsed:
        if prefix != "O" and entity_type not in types:
            types.append(entity_type)
    return types, scheme, parsed


class NERSource:
    """Token-classification rows: word lists and ``Sequence(ClassLabel)`` tags (IOB2 or IO).

    Args:
        dataset (`datasets.Dataset`): Needs a ``tokens`` column (lists of strings) and a tags
            column whose feature is a sequence of ``ClassLabel`` with names like ``B-person``.
        name (`str`, *optional*): Dataset name; defaults to ``dataset.info.dataset_name``.
        tokens_column (`str`, defaults to ``"tokens"``), tags_column (`str`, defaults to ``"ner_tags"``).

    Each sentence's tags are parsed into entity mentions once; ``counts[s, t]`` is the number of
    mentions of type ``t`` in sentence ``s``.
    """

    kind = "ner"

    def __init__(
        self,
        dataset: Dataset,
        *,
        name: str | None = None,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
    ) -> None:
        self.name = _dataset_name(dataset, name)
        _require_column(dataset, tokens_column, "tokens", self.name)
        _require_column(dataset, tags_column, "tags", self.name)
        feature = getattr(dataset.features[tags_column], "feature", None)
        if not isinstance(feature, ClassLabel):
            raise TypeError(
                f"Column {tags_column!r} of {self.name!r} is {dataset.features[tags_column]!r}; "
                "NER needs a sequence of ClassLabel (IOB2 names such as 'B-person')."
            )
        self.columns = {"tokens_column": tokens_column, "tags_column": tags_column}
        self.tag_names: list[str] = list(feature.names)
        self.types, self.data_scheme, parsed = _parse_tag_names(self.tag_names, repr(self.name))
        type_index = {t: i for i, t in enumerate(self.types)}
        self.tokens: list[list[str]] = _column(dataset, tokens_column)
        tags: list[list[int]] = _column(dataset, tags_column)
        self.spans: list[list[tuple[int, int, int]]] = []
        self.counts = np.zeros((len(self.tokens), len(self.types)), dtype=np.int64)
        for s, (words, sentence_tags) in enumerate(zip(self.tokens, tags, strict=True)):
            if len(words) != len(sentence_tags):
                raise ValueError(
                    f"Row {s} of {self.name!r} has {len(words)} tokens but {len(sentence_tags)} tags."
                )
            spans = _spans([parsed[t] for t in sentence_tags], type_index)
            self.spans.append(spans)
            for t, _, _ in spans:
                self.counts[s, t] += 1
        self.fingerprint = _fingerprint(self.tokens, tags, self.tag_names)
        self.corpus_fingerprint = corpus_build_fingerprint(dataset)
        # Identical sentences share a key so a duplicate never crosses support/query.
        first: dict[tuple[str, ...], int] = {}
        self.duplicate_of = np.asarray(
            [first.setdefault(tuple(w), s) for s, w in enumerate(self.tokens)], dtype=np.int64
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def mention_totals(self) -> dict[str, int]:
        return {t: int(n) for t, n in zip(self.types, self.counts.sum(axis=0), strict=True)}


def _spans(tags: list[tuple[str, str]], type_index: dict[str, int]) -> list[tuple[int, int, int]]:
    """Entity mentions as (type id, start, end) from (prefix, type) tags.

    An ``I-`` tag that does not continue an entity of its type starts a new one (the lenient
    reading seqeval uses); for bare IO tags a run of one type is one mention.
    """
    spans: list[tuple[int, int, int]] = []
    current: list[int] | None = None
    for i, (prefix, entity_type) in enumerate(tags):
        if prefix == "O":
            current = None
            continue
        t = type_index[entity_type]
        continues = current is not None and current[0] == t and prefix in ("I", "")
        if continues:
            current[2] = i + 1
        else:
            current = [t, i, i + 1]
            spans.append(current)  # type: ignore[arg-type]
    return [tuple(s) for s in spans]  # type: ignore[misc]
