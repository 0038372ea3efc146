"""Bring your own data: a local CSV/TSV/JSON(L) file or a Hub dataset id, in the common schema.

Name the columns that hold the text and label (and optionally a domain), or the tokens and
tags for NER; the result is saved like the packaged corpora and loads with ``load_corpus``.
Rows with an empty text or a missing label are dropped and counted; duplicates are handled as
in the packaged corpora (one copy kept, conflicting labels dropped).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, load_dataset

from metanlp.corpora.common import BuildResult, CorpusError, build_corpus, dedupe, normalize_space
from metanlp.corpora.schema import (
    classification_features,
    iob2_errors,
    iob2_tag_names,
    ner_features,
    plain_to_iob2,
    validate_classification,
    validate_ner,
)

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}
TAG_SCHEMES = ("iob2", "iob1", "io")


def load_source(
    source: str | os.PathLike, split: str = "train", config: str | None = None
) -> Dataset:
    """A local CSV/TSV/JSON/JSONL file, or else a Hub dataset id (``config``/``split`` apply)."""
    path = Path(source)
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if path.exists():
        if fmt is None:
            raise CorpusError(
                f"{path}: unsupported file type '{path.suffix}'; accepted: {sorted(FILE_FORMATS)}."
            )
        return _read_csv(path, "\t" if fmt == "tsv" else ",") if fmt != "json" else _read_json(path)
    if fmt is not None:
        raise CorpusError(f"No such file: {path}.")
    try:
        ds = load_dataset(str(source), config, split=split)
    except Exception as err:  # the Hub raises many types; all mean "could not load it"
        raise CorpusError(
            f"Could not load '{source}' as a local file (none there) or a Hub dataset "
            f"(config={config!r}, split={split!r}): {type(err).__name__}: {err}. Offline "
            "(HF_HUB_OFFLINE=1) only datasets already in the cache load."
        ) from err
    if not isinstance(ds, Dataset):
        raise CorpusError(f"'{source}' gave {type(ds).__name__}; name one split with --split.")
    return ds


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:  # legacy files: cp1252 covers latin-1's printable range
        return raw.decode("cp1252", errors="replace")


def _read_csv(path: Path, delimiter: str) -> Dataset:
    # The csv module over decoded text keeps CRLF endings and quoted line breaks inside their
    # field, and leaves every value a string (labels such as "05" keep their spelling).
    reader = csv.DictReader(
        io.StringIO(_decode(path.read_bytes()), newline=""), delimiter=delimiter
    )
    rows = list(reader)
    if not reader.fieldnames:
        raise CorpusError(f"{path}: no header row; the first line must name the columns.")
    return Dataset.from_dict({c: [r.get(c) for r in rows] for c in reader.fieldnames})


def _read_json(path: Path) -> Dataset:
    """A JSON array of objects, or JSON Lines (one object per line)."""
    text = _decode(path.read_bytes())
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise CorpusError(f"{path}: not a JSON array or JSON Lines file: {err}") from err
    if not all(isinstance(r, dict) for r in records):
        raise CorpusError(f"{path}: every record must be a JSON object with named fields.")
    return Dataset.from_list(records)


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """Convert one sentence's tags from ``scheme`` (iob2, iob1, io) to IOB2."""
    if scheme == "iob2":
        return list(tags)
    if scheme == "io":  # "PER"/"I-PER" both mean "inside an entity of type PER"
        return plain_to_iob2([t[2:] if t[:2] in ("I-", "B-") else t for t in tags])
    if scheme == "iob1":  # an I- that does not continue its type starts an entity
        out, prev = [], "O"
        for tag in tags:
            if tag.startswith("I-") and prev[2:] != tag[2:]:
                tag = "B-" + tag[2:]
            out.append(tag)
            prev = tag
        return out
    raise CorpusError(f"Unknown tag scheme '{scheme}'; accepted: {', '.join(TAG_SCHEMES)}.")


def _require_columns(ds: Dataset, source: Any, columns: dict[str, str | None]) -> None:
    for role, col in columns.items():
        if col is not None and col not in ds.column_names:
            raise CorpusError(
                f"{source}: {role} column '{col}' does not exist; columns are {ds.column_names}."
            )


def _names(feature: Any, values: list[Any]) -> list[str]:
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    uniq = set(values)
    return [str(v) for v in sorted(uniq, key=lambda v: (isinstance(v, str), v))]


def make_classification(
    ds: Dataset,
    source: Any,
    text_column: str,
    label_column: str,
    domain_column: str | None,
    name: str,
) -> tuple[Dataset, dict[str, int]]:
    """``text`` + ``label`` (+ ``domain``) from the named columns."""
    _require_columns(
        ds, source, {"text": text_column, "label": label_column, "domain": domain_column}
    )
    label_feat = ds.features[label_column]
    raw_texts, raw_labels = ds[text_column], ds[label_column]
    domains = ds[domain_column] if domain_column else [None] * len(ds)
    rows, dropped = [], {"empty_text": 0, "missing_label": 0}
    for text, label, domain in zip(raw_texts, raw_labels, domains, strict=True):
        text = normalize_space(str(text)) if text is not None else ""
        if not text:
            dropped["empty_text"] += 1
        elif label is None or (isinstance(label, str) and not label.strip()):
            dropped["missing_label"] += 1
        else:
            rows.append((text, label if isinstance(label_feat, ClassLabel) else str(label), domain))
    if not rows:
        raise CorpusError(f"{source}: no usable rows (dataset empty, or every text/label empty).")
    keep, dup = dedupe([r[0] for r in rows], [r[1] for r in rows])
    dropped.update(dup)
    # Declared ClassLabel names are kept as given; otherwise the classes are those left after
    # cleaning, so that no class without examples appears.
    names = _names(label_feat, [rows[i][1] for i in keep])
    data: dict[str, list] = {
        "text": [rows[i][0] for i in keep],
        "label": [
            rows[i][1] if isinstance(label_feat, ClassLabel) else names.index(rows[i][1])
            for i in keep
        ],
    }
    if domain_column:
        data["domain"] = [str(rows[i][2]) for i in keep]
    out = Dataset.from_dict(data, features=classification_features(names, bool(domain_column)))
    validate_classification(out, name)
    return out, dropped


def make_ner(
    ds: Dataset, source: Any, tokens_column: str, tags_column: str, tag_scheme: str, name: str
) -> tuple[Dataset, dict[str, int]]:
    """``tokens`` + ``ner_tags`` (IOB2) from the named columns."""
    _require_columns(ds, source, {"tokens": tokens_column, "tags": tags_column})
    inner = getattr(ds.features[tags_column], "feature", None)
    sentences, dropped = [], {"empty_sentence": 0}
    for i, (tokens, tags) in enumerate(zip(ds[tokens_column], ds[tags_column], strict=True)):
        if not tokens:
            dropped["empty_sentence"] += 1
            continue
        if isinstance(inner, ClassLabel):
            tags = [inner.names[t] for t in tags]
        elif any(not isinstance(t, str) for t in tags):
            raise CorpusError(
                f"{source}: row {i} has integer tags without names; store tags as strings or as a "
                "sequence of ClassLabel."
            )
        if len(tokens) != len(tags):
            raise CorpusError(f"{source}: row {i} has {len(tokens)} tokens but {len(tags)} tags.")
        tags = to_iob2(list(tags), tag_scheme)
        errors = iob2_errors(tags)
        if errors:
            raise CorpusError(
                f"{source}: row {i} is not valid {tag_scheme.upper()}: {errors[0]}. If your tags "
                "use another scheme, pass --tag-scheme io (types without prefixes) or iob1."
            )
        sentences.append(([str(t) for t in tokens], tags))
    if not sentences:
        raise CorpusError(f"{source}: no usable rows (dataset empty, or every sentence empty).")
    keep, dup = dedupe([tuple(t) for t, _ in sentences], [tuple(g) for _, g in sentences])
    dropped.update(dup)
    sentences = [sentences[i] for i in keep]
    names = iob2_tag_names(t[2:] for _, tags in sentences for t in tags if t != "O")
    index = {n: i for i, n in enumerate(names)}
    out = Dataset.from_dict(
        {
            "tokens": [t for t, _ in sentences],
            "ner_tags": [[index[g] for g in tags] for _, tags in sentences],
        },
        features=ner_features(names),
    )
    validate_ner(out, name)
    return out, dropped


def build(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    domain_column: str | None = None,
    tokens_column: str | None = None,
    tags_column: str | None = None,
    tag_scheme: str = "iob2",
    split: str = "train",
    config: str | None = None,
    force: bool = False,
) -> BuildResult:
    """Build a corpus from your own file or Hub dataset into ``out``.

    Args:
        source (`str` or `os.PathLike`): a ``.csv``/``.tsv``/``.json``/``.jsonl`` file, or a Hub
            dataset id.
        out (`str` or `os.PathLike`): target folder, e.g. ``data/my_reviews``.
        text_column, label_column (`str`): classification columns; ``domain_column`` optional.
        tokens_column, tags_column (`str`): NER columns (give these *or* the text/label pair).
        tag_scheme (`str`, defaults to ``"iob2"``): ``iob2``, ``iob1`` or ``io``.
        split, config (`str`): for Hub datasets.
        force (`bool`, defaults to `False`): rebuild even if up to date.

    Example:
        ```python
        >>> from metanlp.corpora import custom
        >>> custom.build("reviews.csv", "data/reviews", text_column="body", label_column="stars")
        ```
    """
    is_cls = text_column is not None or label_column is not None
    is_ner = tokens_column is not None or tags_column is not None
    if (
        is_cls == is_ner
        or (is_cls and not (text_column and label_column))
        or (is_ner and not (tokens_column and tags_column))
    ):
        raise CorpusError(
            "Name either --text-column and --label-column (classification, optional --domain-column) "
            "or --tokens-column and --tags-column (NER), not both and not one of a pair."
        )
    if tag_scheme not in TAG_SCHEMES:
        raise CorpusError(f"Unknown tag scheme '{tag_scheme}'; accepted: {', '.join(TAG_SCHEMES)}.")
    path = Path(source)
    if path.exists():
        st = path.stat()
        src: dict[str, Any] = {
            "file": str(path.resolve()),
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }
    else:
        src = {"hub_id": str(source), "config": config, "split": split}
    options = {
        "text": text_column, "label": label_column, "domain": domain_column,
        "tokens": tokens_column, "tags": tags_column, "tag_scheme": tag_scheme,
    }  # fmt: skip
    name = Path(out).name

    def make() -> tuple[Dataset, dict[str, int]]:
        ds = load_source(source, split=split, config=config)
        if len(ds) == 0:
            raise CorpusError(f"{source}: the dataset is empty (0 rows).")
        if is_cls:
            return make_classification(ds, source, text_column, label_column, domain_column, name)
        return make_ner(ds, source, tokens_column, tags_column, tag_scheme, name)

    return build_corpus(name, out, make, source=src, options=options, force=force)
