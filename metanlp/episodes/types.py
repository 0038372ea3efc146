"""The two objects every sampler produces: an `EpisodeSpec` (what to draw) and an `Episode` (tensors).

A spec is the *definition* of a task: which dataset rows go to the support and query sets and
which episode label each class or entity type gets. It is small, JSON-serialisable and
independent of the tokenizer, so a fixed evaluation set is a list of specs on disk. An episode
is a spec collated with a tokenizer into model-ready tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch

KINDS = ("classification", "ner")
NER_SCHEMES = ("io", "iob2")
NER_MODES = ("strict", "relaxed")


class EpisodeSamplingError(ValueError):
    """An episode cannot be drawn from the data as asked (for example a type ran out of mentions)."""


@dataclass
class EpisodeSpec:
    """The definition of one few-shot task, without tensors.

    Args:
        kind (`str`): ``"classification"`` or ``"ner"``.
        dataset (`str`): Name of the dataset the row indices refer to.
        fingerprint (`str`): Content hash of that dataset's used columns (see `ClassificationSource`).
        task (`str`): Readable task name, e.g. ``"tweets/domain=airlines"``.
        label_names (`list[str]`): Episode label ``i`` -> original class name or entity type;
            the order is the episode's random permutation.
        support_rows, query_rows (`list[int]`): Dataset row indices, in presentation order.
        seed (`int`, *optional*): Sampler seed that produced the spec.
        index (`int`, *optional*): Global episode index within the sampler's stream.
        scheme (`str`, *optional*): NER only, ``"io"`` or ``"iob2"``.
        mode (`str`, *optional*): NER only, ``"strict"`` (Few-NERD rule (a)) or ``"relaxed"``.
    """

    kind: str
    dataset: str
    fingerprint: str
    task: str
    label_names: list[str]
    support_rows: list[int]
    query_rows: list[int]
    seed: int | None = None
    index: int | None = None
    scheme: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"EpisodeSpec.kind={self.kind!r}; expected one of {KINDS}.")
        if self.kind == "ner":
            if self.scheme not in NER_SCHEMES:
                raise ValueError(f"NER spec scheme={self.scheme!r}; expected one of {NER_SCHEMES}.")
            if self.mode not in NER_MODES:
                raise ValueError(f"NER spec mode={self.mode!r}; expected one of {NER_MODES}.")
        for part in ("support_rows", "query_rows"):
            rows = getattr(self, part)
            bad = [r for r in rows if isinstance(r, bool) or not isinstance(r, int | np.integer)]
            if bad:
                # int(2.7) would be row 2, which may be a row of the other set (support in query)
                raise ValueError(
                    f"Episode {self.task!r}: {part} must be whole row indices, got {bad[:5]}."
                )
            rows = [int(r) for r in rows]
            repeated = sorted({r for r in rows if rows.count(r) > 1})
            if repeated:
                raise ValueError(
                    f"Episode {self.task!r}: rows {repeated[:5]} appear more than once in {part}."
                )
            setattr(self, part, rows)
        overlap = set(self.support_rows) & set(self.query_rows)
        if overlap:
            raise ValueError(
                f"Episode {self.task!r}: rows {sorted(overlap)[:5]} are in both support and query."
            )
        self.label_names = [str(n) for n in self.label_names]

    @property
    def n_way(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown episode spec fields {sorted(unknown)}; known: {sorted(known)}."
            )
        return cls(**data)


@dataclass
class Episode:
    """A few-shot task ready for the model (tensors on CPU; the trainer moves them).

    Attributes:
        support, query (`dict[str, torch.Tensor]`): ``input_ids``, ``attention_mask`` (and
            ``token_type_ids`` when the tokenizer makes them) and ``labels``: shape ``(B,)`` for
            classification, ``(B, T)`` for NER with ``-100`` on ignored sub-tokens.
        n_way (`int`): Number of classes (classification) or entity types (NER).
        label_names (`list[str]`): Episode label ``i`` -> class name or entity type.
        kind (`str`): ``"classification"`` or ``"ner"``.
        task (`str`): Readable task name.
        support_inputs, query_inputs: Texts, or token lists for NER.
        support_targets, query_targets: Episode label ids (classification) or per-word tag
            strings of the episode's scheme (NER).
        support_word_ids, query_word_ids: NER only; per example, the word index of each
            sub-token position (``None`` for special and padding tokens), length ``T``.
        tag_names (`list[str]`): NER only; tag id -> tag string, e.g. ``["O", "person", "company"]``.
        spec (`EpisodeSpec`): The definition this episode was collated from.
    """

    support: dict[str, torch.Tensor]
    query: dict[str, torch.Tensor]
    n_way: int
    label_names: list[str]
    kind: str
    task: str
    support_inputs: list[Any]
    query_inputs: list[Any]
    support_targets: list[Any]
    query_targets: list[Any]
    support_word_ids: list[list[int | None]] | None = None
    query_word_ids: list[list[int | None]] | None = None
    tag_names: list[str] | None = None
    spec: EpisodeSpec | None = field(default=None, repr=False)

    def to(self, device: torch.device | str) -> Episode:
        """A copy with the support and query tensors on ``device`` (raw inputs are shared)."""
        return replace(
            self,
            support={k: v.to(device) for k, v in self.support.items()},
            query={k: v.to(device) for k, v in self.query.items()},
        )

    @property
    def num_labels(self) -> int:
        """Output size the head needs: ``n_way`` for classification, ``len(tag_names)`` for NER."""
        return len(self.tag_names) if self.kind == "ner" and self.tag_names else self.n_way

    @property
    def scheme(self) -> str | None:
        return self.spec.scheme if self.spec is not None else None

    @property
    def mode(self) -> str | None:
        return self.spec.mode if self.spec is not None else None
