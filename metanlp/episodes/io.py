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

from .collate import EpisodeCollator
from .sampler import EpisodeSampler
from .sources import ClassificationSource, NERSource
from .types import Episode, EpisodeSpec

FORMAT = "metanlp-episodes"
VERSION = 1
Source = ClassificationSource | NERSource


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
    """Read an episode file; returns the specs and the header (``datasets``, ``metadata``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a metanlp episode file (format={data.get('format')!r}).")
    if data.get("version") != VERSION:
        raise ValueError(f"{path} has version {data.get('version')}; this metanlp reads {VERSION}.")
    specs = [EpisodeSpec.from_dict(d) for d in data["episodes"]]
    return specs, {"datasets": data["datasets"], "metadata": data["metadata"]}


def load_episodes(
    path: str | os.PathLike,
    datasets: Mapping[str, Dataset | Source] | Dataset | Source,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_length: int | None = None,
    collator: EpisodeCollator | None = None,
    model: PreTrainedModel | None = None,
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

    Example:
        ```python
        >>> episodes = load_episodes("eval/bbc_5w5s.json", {"bbc_news": bbc}, tokenizer=tokenizer)
        ```
    """
    specs, header = load_episode_specs(path)
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
    if collator is None:
        if tokenizer is None:
            raise ValueError("load_episodes needs tokenizer=... (or collator=...).")
        length = max_length or int(header["metadata"].get("max_length", 128))
        collator = EpisodeCollator(tokenizer, length, model=model)
    return [collator(spec, sources[spec.dataset]) for spec in specs]
