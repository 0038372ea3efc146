"""Classes described by their names: parsing, meaningless names, encoding, mixing with examples.

A user's classes nearly always have names ("card arrival", "politics", "negative"), and at one
shot a name says as much as an example: the frozen MiniLM classifies BBC News by the cosine of
an article to "this news article is about {name}" 82.7 % of the time with no example at all.
This module holds everything about names that the learner, ProtoNet and the policy share:

1. **parsing** (`describe_label`): a label becomes words (``card_arrival`` -> "card arrival",
   ``AddToPlaylist`` -> "add to playlist", ``sci.space`` -> "sci space"), or the description a
   user maps it to;
2. **meaningless names** (`meaningless_reason`): ``LABEL_0``, ``1``, ``A``, ``class_3``, a hash
   carry nothing; such a task is adapted without names and the decision says why
   (`resolve_label_names`);
3. **encoding** (`encode_label_names`, `with_label_names`): each name is put in a template
   (`DEFAULT_TEMPLATE`) and tokenised into the support batch under `NAME_IDS` / `NAME_MASK`;
4. **mixing** (`name_prototypes`): class ``n``'s prototype is
   ``normalise(mean_k normalise(f(x_k)) + w(K_n) * normalise(f(name_n)))`` with ``K_n`` its
   support count and ``w`` a learned, shot-dependent weight (`shot_weights`; ProtoNet keeps the
   table as the extra ``names.weight``); a class with no example (zero-shot) is its name.
   Logits are ``scale * cos(f(x), c_n)`` (`cosine_logits`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from metanlp.meta.name_typer import describe_type

NAME_IDS = "label_names_input_ids"
NAME_MASK = "label_names_attention_mask"
NAME_TRUST = "label_names_trust"
"""Support-batch keys: the encoded names (one row per class) and a factor on the learned weight
(the policy's choice; 1 when absent)."""

DEFAULT_TEMPLATE = "this is about {}"
"""How a name is encoded: the best of four templates at 0 shots on tweets (sentiment in two
domains, and the domain as a topic), never on held-out corpora (`benchmarks/bench_names.py
--validate`, `benchmarks/results/names_validation.md`; the four were within 2 points of each
other); ``"{}"`` gives the bare name."""

MAX_SHOTS = 16
"""`shot_weights` has one entry per shot count 0..MAX_SHOTS; more shots share the last one."""

DEFAULT_WEIGHT = 2.0
"""The initial name weight w(K) of every K (before meta-training): the best of 0.5, 1, 2, 4 at
1 shot on the same tweet validation tasks (within 2 points of each other)."""

NAME_MAX_LENGTH = 32

_NUMBERED = re.compile(
    r"(label|class|cls|category|cat|type|target|id|c|l|y|k|x)?[\s_\-.:#]*\d+", re.IGNORECASE
)
_HEX = re.compile(r"(0x)?[0-9a-f]{6,}", re.IGNORECASE)


def describe_label(label: Any, descriptions: Mapping[Any, str] | None = None) -> str:
    """The words a label is encoded as: ``descriptions[label]`` when given, else the label's
    string split into words (``"card_arrival"`` -> ``"card arrival"``, ``"AddToPlaylist"`` ->
    ``"Add To Playlist"``, ``"sci.space"`` -> ``"sci space"``).

    Example:
        ```python
        >>> describe_label("AddToPlaylist")
        'Add To Playlist'
        ```
    """
    if descriptions is not None and label in descriptions:
        return str(descriptions[label]).strip()
    return describe_type(str(label))


def meaningless_reason(text: str) -> str | None:
    """Why a described name carries no meaning (``None`` if it may): no letters, one letter,
    a numbered placeholder (``LABEL_0``, ``class 3``) or a hash."""
    compact = text.strip()
    if not any(ch.isalpha() for ch in compact):
        return "has no letters"
    if len(compact) == 1:
        return "is a single letter"
    if _NUMBERED.fullmatch(compact):
        return "is a numbered placeholder"
    if _HEX.fullmatch(compact) and any(ch.isdigit() for ch in compact):
        return "looks like a hash"
    return None


@dataclass
class NameChoice:
    """How one task used its class names (part of `metanlp.meta.policy.AdaptDecision`).

    Args:
        used (`bool`): Whether the names entered the prototypes.
        reason (`str`): Why (or why not): ``"given"``, ``"turned off (label_names=False)"``,
            the first meaningless name, the cross-validation, ...
        names (`list[str]`): The described names, one per class (empty when not used).
        trust (`float`, defaults to 1.0): Factor on the learned weight w(K) (0: names unused).
        scores (`dict`): ``"trust=T"`` -> held-out ``{"accuracy", "loss"}`` when cross-validated.
    """

    used: bool
    reason: str
    names: list[str] = field(default_factory=list)
    trust: float = 1.0
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.used:
            return f"names not used: {self.reason}"
        return f"names used (trust {self.trust:g}: {self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "used": self.used,
            "reason": self.reason,
            "names": list(self.names),
            "trust": self.trust,
            "scores": self.scores,
        }


def resolve_label_names(
    classes: Sequence[Hashable], label_names: bool | Mapping[Any, str] | Sequence[Any] | None
) -> NameChoice:
    """Which text describes each class, or why the names are not used.

    Args:
        classes (`Sequence`): The task's classes in label-id order.
        label_names: ``None`` or ``True``: the classes themselves (split into words); ``False``:
            off; a mapping: class -> description (classes it lacks keep their own name); a
            sequence: the classes themselves (the order is the caller's business).

    Returns:
        `NameChoice` with ``names`` set when usable; meaningless or duplicate names are refused
        for the whole task (one uninformative prototype would drag its class everywhere).
    """
    if label_names is False:
        return NameChoice(False, "turned off (label_names=False)")
    descriptions = label_names if isinstance(label_names, Mapping) else None
    if descriptions is not None:
        bad = [k for k, v in descriptions.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(
                f"label_names maps {bad[:5]!r} to empty or non-string descriptions; give each "
                "class a text such as {'card_arrival': 'my card has not arrived'}."
            )
    texts = [describe_label(c, descriptions) for c in classes]
    for c, text in zip(classes, texts, strict=True):
        why = meaningless_reason(text)
        if why is not None:
            return NameChoice(False, f"the name {c!r} {why}; names carry no meaning here")
    seen: dict[str, Any] = {}
    for c, text in zip(classes, texts, strict=True):
        key = text.lower()
        if key in seen:
            return NameChoice(False, f"the names {seen[key]!r} and {c!r} read the same ({text!r})")
        seen[key] = c
    return NameChoice(True, "described by the user" if descriptions else "the labels", texts)


def encode_label_names(
    tokenizer: Any, names: Sequence[str], template: str = DEFAULT_TEMPLATE
) -> dict[str, Tensor]:
    """``{NAME_IDS, NAME_MASK}``: each name put in ``template`` and tokenised (one padded row
    per class, at most `NAME_MAX_LENGTH` tokens)."""
    if not names:
        raise ValueError("encode_label_names: no class names were given.")
    if "{}" not in template:
        raise ValueError(f"name template {template!r} has no '{{}}' where the name goes.")
    texts = [template.format(n) for n in names]
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=NAME_MAX_LENGTH, return_tensors="pt"
    )
    return {NAME_IDS: enc["input_ids"], NAME_MASK: enc["attention_mask"]}


def with_label_names(
    algorithm: Any, support: Mapping[str, Tensor], names: Sequence[str], trust: float | None = None
) -> dict[str, Tensor]:
    """``support`` plus the encoded ``names`` (in the algorithm's ``name_template``) and, if
    given, the ``trust`` factor; ``support`` as it is when the algorithm does not read names."""
    if not getattr(algorithm, "uses_label_names", False):
        return dict(support)
    template = getattr(algorithm.config, "name_template", DEFAULT_TEMPLATE)
    encoded = encode_label_names(algorithm.model.tokenizer, names, template)
    device = support["input_ids"].device
    out = {**support, **{k: v.to(device) for k, v in encoded.items()}}
    if trust is not None:
        out[NAME_TRUST] = torch.tensor(float(trust), device=device)
    return out


def with_resolved_names(
    algorithm: Any,
    support: Mapping[str, Tensor],
    classes: Sequence[Hashable],
    label_names: bool | Mapping[Any, str] | Sequence[Any] | None = None,
) -> tuple[dict[str, Tensor], NameChoice | None]:
    """`resolve_label_names` then `with_label_names` when the names are usable: the support
    batch of an episode (or a user's task) and how its names were resolved (``None`` for an
    algorithm that does not read names)."""
    if not getattr(algorithm, "uses_label_names", False):
        return dict(support), None
    choice = resolve_label_names(classes, label_names)
    if choice.used:
        return with_label_names(algorithm, support, choice.names), choice
    return dict(support), choice


def name_batch(support: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
    """The encoded names of a support batch as model inputs (``None`` when it has none)."""
    if NAME_IDS not in support:
        return None
    return {"input_ids": support[NAME_IDS], "attention_mask": support[NAME_MASK]}


def without_names(batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` without the name keys (e.g. before a fold is split by rows)."""
    return {k: v for k, v in batch.items() if k not in (NAME_IDS, NAME_MASK, NAME_TRUST)}


def inverse_softplus(value: float) -> float:
    """``x`` with ``softplus(x) = value`` (the learned weights are stored before softplus)."""
    return value + math.log(-math.expm1(-value))


def shot_weights(table: Tensor, counts: Tensor) -> Tensor:
    """``w(K_n) = softplus(table[min(K_n, len(table) - 1)])`` for every class, ``(N,)``."""
    index = counts.clamp(max=table.shape[0] - 1)
    return F.softplus(table)[index]


def name_prototypes(
    features: Tensor, labels: Tensor, names: Tensor, n_way: int, weights: Tensor | float
) -> Tensor:
    """``(n_way, H)`` unit prototypes ``normalise(mean_k normalise(f_k) + w_n normalise(e_n))``.

    Args:
        features (`Tensor`): ``(B, H)`` support embeddings (``B`` may be 0: zero-shot).
        labels (`Tensor`): ``(B,)`` episode labels.
        names (`Tensor`): ``(n_way, H)`` name embeddings.
        n_way (`int`): Classes.
        weights (`Tensor` or `float`): ``(n_way,)`` per-class weight of the name, or one number.

    Returns:
        The prototypes, differentiable in every input.
    """
    if names.shape[0] < n_way:
        raise ValueError(f"{names.shape[0]} class names for {n_way} classes; give one per class.")
    names = F.normalize(names[:n_way], dim=-1)
    counts = torch.bincount(labels, minlength=n_way)[:n_way].to(names.dtype)
    sums = torch.zeros_like(names)
    if features.shape[0]:
        sums = sums.index_add(0, labels, F.normalize(features, dim=-1).to(names.dtype))
    means = sums / counts.clamp(min=1).unsqueeze(-1)
    weights = torch.as_tensor(weights, dtype=names.dtype, device=names.device)
    if weights.dim():
        weights = weights.reshape(-1, 1)
    return F.normalize(means + weights * names, dim=-1)


def cosine_logits(features: Tensor, prototypes: Tensor, scale: Tensor | float) -> Tensor:
    """``scale * cos(f(x), c_n)``, ``(..., N)``; the prototypes are unit length already."""
    return scale * (F.normalize(features, dim=-1) @ prototypes.transpose(0, 1))
