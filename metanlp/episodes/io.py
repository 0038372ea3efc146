"""Fixed evaluation episodes on disk: JSON definitions (rows, label order, dataset fingerprint).

Only the definitions are stored (no tensors, no pickle): loading rebuilds the tensors with the
tokenizer given, so every method is scored on identical episodes, and the same tokenizer gives
identical tensors. Each dataset's content fingerprint is stored and checked on load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from metanlp.episodes.collate import EpisodeCollator
from metanlp.episodes.sampler import EpisodeSampler
from metanlp.episodes.sources import ClassificationSource, NERSource
from metanlp.episodes.types import Episode, EpisodeSpec
from metanlp.files import CorruptFileError, read_json
from metanlp.models import check_max_length_setting

FORMAT = "metanlp-episodes"
VERSION = 1
Source = ClassificationSource | NERSource
REWRITE_FIX = "draw the episodes again with `metanlp make-episodes` (or `save_episodes`)."


def save_episodes(
    path: str | os.PathLike,
    specs: Sequence[EpisodeSpec],
    sources: Mapping[str, Source] | EpisodeSampler,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write episode definitions to a JSON file.

    Args:
        path (`str` or `os.PathLike`): Output file (parents are created).
        specs (`Sequence[EpisodeSpec]`): E.g. ``sampler.specs(600)``.
        sources (`Mapping[str, Source]` or `EpisodeSampler`): The data the specs were drawn from
            (their column names and fingerprints are recorded).
        metadata (`Mapping[str, Any]`, *optional*): Anything JSON-serialisable to keep alongside,
            e.g. ``{"max_length": 128}`` (used as the default on load).

    Example:
        ```python
        >>> save_episodes("eval/bbc_5w5s.json", sampler.specs(100), sampler, metadata={"max_length": 128})
        ```
    """
    if isinstance(sources, EpisodeSampler):
        sources = sources.sources
    length = (metadata or {}).get("max_length")
    if length is not None:
        check_max_length_setting(length, "metadata['max_length'] (make-episodes --max-length)")
    if not specs:
        raise ValueError(
            f"No episodes to write to {path}: an episode file needs at least 1 (e.g. "
            "`metanlp make-episodes --n 600`)."
        )
    header: dict[str, Any] = {}
    for spec in specs:
        source = sources.get(spec.dataset)
        if source is None:
            raise KeyError(f"No source named {spec.dataset!r} among {sorted(sources)}.")
        if source.fingerprint != spec.fingerprint:
            raise ValueError(
                f"Spec {spec.task!r} does not match the current data of {spec.dataset!r}."
            )
        header[spec.dataset] = {
            "kind": source.kind,
            "fingerprint": source.fingerprint,
            "num_rows": len(source),
            "columns": dict(source.columns),
        }
        if getattr(source, "corpus_fingerprint", None):  # the corpus build stamp's (its sources)
            header[spec.dataset]["corpus_fingerprint"] = source.corpus_fingerprint
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "datasets": header,
        "metadata": dict(metadata or {}),
        "episodes": [spec.to_dict() for spec in specs],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def load_episode_specs(path: str | os.PathLike) -> tuple[list[EpisodeSpec], dict[str, Any]]:
    """Read an episode file; returns the specs and the header (``datasets``, ``metadata``).

    Raises:
        FileNotFoundError: no such file.
        CorruptFileError: the file is empty, not JSON, not an episode file, or holds no episode
            or a malformed one (the message names the file and the episode).
    """
    data = read_json(path, REWRITE_FIX)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CorruptFileError(
            f"{path} is not a metanlp episode file (format={found!r}); {REWRITE_FIX}"
        )
    if data.get("version") != VERSION:
        raise CorruptFileError(
            f"{path} has version {data.get('version')}; this metanlp reads {VERSION}: {REWRITE_FIX}"
        )
    episodes, datasets = data.get("episodes"), data.get("datasets")
    if not isinstance(datasets, dict) or not isinstance(data.get("metadata", {}), dict):
        raise CorruptFileError(f"{path} has no valid 'datasets' header; {REWRITE_FIX}")
    if not isinstance(episodes, list) or not episodes:
        raise CorruptFileError(f"{path} holds no episodes; {REWRITE_FIX}")
    specs = []
    for i, item in enumerate(episodes):
        try:
            if not isinstance(item, dict):
                raise TypeError(f"expected an object, got {type(item).__name__}")
            specs.append(EpisodeSpec.from_dict(item))
        except (ValueError, TypeError, KeyError) as err:
            raise CorruptFileError(
                f"{path}: episode {i} is malformed ({err}); {REWRITE_FIX}"
            ) from None
    missing = sorted({s.dataset for s in specs} - set(datasets))
    if missing:
        raise CorruptFileError(
            f"{path}: episodes use datasets {missing} that its header does not describe; "
            f"{REWRITE_FIX}"
        )
    return specs, {"datasets": datasets, "metadata": data.get("metadata", {})}


def check_spec(spec: EpisodeSpec, source: Source, where: str) -> None:
    """Fail with a clear message when a spec does not fit its data: a class or entity type the
    dataset lacks, a row index out of range, or a classification row of a class not in the
    episode (an edited file, or one drawn from other data)."""
    known = source.label_names if isinstance(source, ClassificationSource) else source.types
    what = "class" if isinstance(source, ClassificationSource) else "entity type"
    unknown = [n for n in spec.label_names if n not in known]
    if unknown:
        raise ValueError(
            f"{where} uses {what} {unknown[0]!r}, which dataset {spec.dataset!r} does not have "
            f"(it has {sorted(known)}); the file was not drawn from this data: {REWRITE_FIX}"
        )
    rows = spec.support_rows + spec.query_rows
    bad = [r for r in rows if not 0 <= r < len(source)]
    if bad:
        raise ValueError(
            f"{where} uses row {bad[0]}, but dataset {spec.dataset!r} has {len(source)} rows; "
            f"{REWRITE_FIX}"
        )
    if isinstance(source, ClassificationSource):
        episode = set(spec.label_names)
        stray = [r for r in rows if source.label_names[source.labels[r]] not in episode]
        if stray:
            name = source.label_names[source.labels[stray[0]]]
            raise ValueError(
                f"{where} uses row {stray[0]} of class {name!r}, which is not among the "
                f"episode's classes {spec.label_names}; {REWRITE_FIX}"
            )


def load_episodes(
    path: str | os.PathLike,
    datasets: Mapping[str, Dataset | Source] | Dataset | Source,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    collator: EpisodeCollator | None = None,
    model: PreTrainedModel | None = None,
    limit: int | None = None,
) -> list[Episode]:
    """Rebuild the episodes of a file with the data and tokenizer given.

    Args:
        path: The file written by `save_episodes`.
        datasets (`Mapping[str, Dataset]` or `Dataset`): The data, by the names in the file (a single
            dataset is enough when the file uses one). Fingerprints must match.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Required unless ``collator`` is given.
        max_length (`int`, *optional*): Defaults to the file's ``metadata["max_length"]``, else 128.
        collator (`EpisodeCollator`, *optional*): Reuse a collator (and its cache).
        model (`PreTrainedModel`, *optional*): Checked against the tokenizer.
        limit (`int`, *optional*): Build only the first `limit` episodes (all by default).

    Example:
        ```python
        >>> episodes = load_episodes("eval/bbc_5w5s.json", {"bbc_news": bbc}, tokenizer=tokenizer)
        ```
    """
    specs, header = load_episode_specs(path)
    specs = specs[:limit] if limit is not None else specs
    names = sorted(header["datasets"])
    if not isinstance(datasets, Mapping):
        if len(names) != 1:
            raise ValueError(f"{path} uses datasets {names}; pass a mapping name -> dataset.")
        datasets = {names[0]: datasets}
    sources: dict[str, Source] = {}
    for name in names:
        info = header["datasets"][name]
        if name not in datasets:
            raise KeyError(f"{path} needs dataset {name!r}; given {sorted(datasets)}.")
        data = datasets[name]
        if isinstance(data, ClassificationSource | NERSource):
            source = data
        elif info["kind"] == "classification":
            source = ClassificationSource(data, name=name, **info["columns"])
        else:
            source = NERSource(data, name=name, **info["columns"])
        if source.fingerprint != info["fingerprint"]:
            raise ValueError(
                f"Dataset {name!r} does not match {path}: the file was written for fingerprint "
                f"{info['fingerprint']} ({info['num_rows']} rows) but the data given has "
                f"{source.fingerprint} ({len(source)} rows). The episodes' row indices would point "
                "at other examples: use the same data (rebuild the corpus the same way) or draw "
                "and save new episodes."
            )
        source.name = name
        sources[name] = source
    for i, spec in enumerate(specs):
        check_spec(spec, sources[spec.dataset], f"{path}: episode {i} ({spec.task!r})")
    if collator is None:
        if tokenizer is None:
            raise ValueError("load_episodes needs tokenizer=... (or collator=...).")
        length = max_length or header["metadata"].get("max_length", 128)
        check_max_length_setting(length, f"max_length of {path}")
        collator = EpisodeCollator(tokenizer, length, model=model)
    return [collator(spec, sources[spec.dataset]) for spec in specs]
