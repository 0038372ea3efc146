"""The two corpus schemas, IOB2 helpers, validation and summaries.

Text classification: ``text`` (string), ``label`` (ClassLabel), optional ``domain`` (string).
NER: ``tokens`` (list of string), ``ner_tags`` (list of ClassLabel with IOB2 names).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from datasets import ClassLabel, Dataset, Features, List, Value


class CorpusError(ValueError):
    """A corpus cannot be built or loaded; the message says why and what to do."""


def classification_features(label_names: Sequence[str], with_domain: bool) -> Features:
    """Features of a text-classification corpus: ``text``, ``label`` (+ ``domain``)."""
    feats: dict[str, Any] = {"text": Value("string"), "label": ClassLabel(names=list(label_names))}
    if with_domain:
        feats["domain"] = Value("string")
    return Features(feats)


def ner_features(tag_names: Sequence[str]) -> Features:
    """Features of an NER corpus: ``tokens`` and ``ner_tags`` (IOB2 names)."""
    return Features(
        {"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=list(tag_names)))}
    )


def iob2_tag_names(entity_types: Iterable[str]) -> list[str]:
    """``["O", "B-a", "I-a", "B-b", ...]`` for the sorted entity types."""
    names = ["O"]
    for etype in sorted(set(entity_types)):
        names += [f"B-{etype}", f"I-{etype}"]
    return names


def plain_to_iob2(tags: Sequence[str], outside: str = "O") -> list[str]:
    """Convert tags without prefixes (``["nam_loc", "nam_loc", "O"]``) to IOB2.

    A run of equal tags becomes one entity (``B-`` then ``I-``); two adjacent entities of the
    same type therefore merge, which is the only reading such tags allow.
    """
    out, prev = [], outside
    for tag in tags:
        if tag == outside:
            out.append(outside)
        else:
            out.append(f"I-{tag}" if tag == prev else f"B-{tag}")
        prev = tag
    return out


def iob2_errors(tags: Sequence[str]) -> list[str]:
    """Problems that make ``tags`` invalid IOB2 (empty list when valid)."""
    errors, prev = [], "O"
    for i, tag in enumerate(tags):
        if tag != "O" and not (tag.startswith("B-") or tag.startswith("I-")) or tag in ("B-", "I-"):
            errors.append(f"position {i}: '{tag}' is neither 'O' nor 'B-<type>'/'I-<type>'")
        elif tag.startswith("I-") and prev[2:] != tag[2:]:
            errors.append(f"position {i}: '{tag}' follows '{prev}' (an entity must start with B-)")
        prev = tag
    return errors


def validate_classification(ds: Dataset, name: str) -> None:
    """Check the text-classification schema; raise :class:`CorpusError` naming the problem."""
    _check_columns(ds, name, ("text", "label"))
    if not isinstance(ds.features["label"], ClassLabel):
        raise CorpusError(
            f"{name}: column 'label' must be a ClassLabel, got {ds.features['label']!r}."
        )
    empty = [i for i, t in enumerate(ds["text"]) if t is None or not t.strip()]
    if empty:
        raise CorpusError(f"{name}: {len(empty)} empty texts (first at rows {empty[:5]}).")


def validate_ner(ds: Dataset, name: str) -> None:
    """Check the NER schema and IOB2 validity of every sentence."""
    _check_columns(ds, name, ("tokens", "ner_tags"))
    tag_feat = getattr(ds.features["ner_tags"], "feature", None)
    if not isinstance(tag_feat, ClassLabel):
        raise CorpusError(f"{name}: 'ner_tags' must be a sequence of ClassLabel, got {tag_feat!r}.")
    bad_names = iob2_errors(tag_feat.names)
    bad_names = [e for e in bad_names if "neither" in e]
    if bad_names:
        raise CorpusError(f"{name}: tag names are not IOB2: {bad_names[:3]}")
    for i, (tokens, tags) in enumerate(zip(ds["tokens"], ds["ner_tags"], strict=True)):
        if not tokens:
            raise CorpusError(f"{name}: sentence {i} has no tokens.")
        if len(tokens) != len(tags):
            raise CorpusError(
                f"{name}: sentence {i} has {len(tokens)} tokens but {len(tags)} tags."
            )
        if any(not t.strip() for t in tokens):
            raise CorpusError(f"{name}: sentence {i} has an empty token.")
        errors = iob2_errors([tag_feat.names[t] for t in tags])
        if errors:
            raise CorpusError(f"{name}: sentence {i} is not valid IOB2: {errors[0]}.")


def _check_columns(ds: Dataset, name: str, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise CorpusError(f"{name}: missing columns {missing}; has {ds.column_names}.")
    if len(ds) == 0:
        raise CorpusError(f"{name}: the dataset is empty (0 rows); nothing to save.")


def summarize(ds: Dataset) -> dict[str, Any]:
    """Counts worth printing and recording: rows, classes (or entity types), domains."""
    if "ner_tags" in ds.column_names:
        names = ds.features["ner_tags"].feature.names
        mentions = Counter(
            names[t][2:] for tags in ds["ner_tags"] for t in tags if names[t][:2] == "B-"
        )
        return {
            "kind": "ner",
            "rows": len(ds),
            "tokens": sum(len(t) for t in ds["tokens"]),
            "classes": dict(sorted(mentions.items(), key=lambda kv: (-kv[1], kv[0]))),
        }
    names = ds.features["label"].names
    counts = Counter(names[i] for i in ds["label"])
    out: dict[str, Any] = {
        "kind": "classification",
        "rows": len(ds),
        "classes": {n: counts.get(n, 0) for n in names},
    }
    if "domain" in ds.column_names:
        domains = Counter(ds["domain"])
        out["domains"] = dict(sorted(domains.items(), key=lambda kv: (-kv[1], kv[0])))
    if "split" in ds.column_names:
        out["splits"] = dict(Counter(ds["split"]))
    return out
