"""Small helpers the meta-learners share: the task loss and accuracy, a scoped train/eval mode,
and the switch to eager attention that second-order gradients need."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from metanlp.models import FewShotModel, get_attn_implementation, set_attn_implementation

logger = logging.getLogger(__name__)
_warned_eager = False


def use_eager_for_second_order(model: FewShotModel) -> None:
    """Switch SDPA attention to eager up front: SDPA's CPU kernel has no double backward.

    Without this the failure would come at the outer backward, after the whole inner loop ran.
    """
    global _warned_eager
    encoder = model.base_encoder
    if get_attn_implementation(encoder) == "sdpa":
        set_attn_implementation(encoder, "eager")
        if not _warned_eager:
            logger.warning(
                "Second-order meta-gradients need double backward through attention, which SDPA "
                "lacks in torch; switched the encoder to eager attention (same results, more memory)."
            )
            _warned_eager = True


def task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over ``(B, N)`` or ``(B, T, N)`` logits; ``-100`` labels are ignored."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of non-ignored labels predicted right (token accuracy for NER)."""
    keep = labels != -100
    if not bool(keep.any()):
        return float("nan")
    return float((logits.detach().argmax(-1)[keep] == labels[keep]).float().mean())


@contextlib.contextmanager
def model_mode(model: nn.Module, train: bool) -> Iterator[None]:
    """Temporarily set train/eval mode (dropout), restoring every submodule's flag after."""
    before = {m: m.training for m in model.modules()}
    model.train(train)
    try:
        yield
    finally:
        for m, flag in before.items():
            m.training = flag


def coerce_setting(
    cls: type, value: Any, name: str, from_int: Callable[[int], Any] | None = None
) -> Any:
    """A test-time setting given loosely, as a dataclass ``cls`` instance or ``None``.

    ``None`` / ``False`` -> ``None`` (off); ``True`` -> ``cls()``; a ``cls`` as is; a mapping ->
    ``cls(**mapping)`` (lists become tuples; unknown keys are an error naming the allowed ones);
    an int -> ``from_int(value)`` when given. Anything else is a `TypeError` naming ``name``.
    """
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    if isinstance(value, cls):
        return value
    if from_int is not None and isinstance(value, int):
        return from_int(value)
    if isinstance(value, Mapping):
        allowed = sorted(cls.__dataclass_fields__)
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"{name}: unknown field(s) {unknown}; allowed: {allowed}.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    accepted = "a step count, " if from_int is not None else ""
    raise TypeError(
        f"{name}={value!r}: expected None, a bool, {accepted}a dict of {cls.__name__} fields or "
        f"a {cls.__name__}."
    )
