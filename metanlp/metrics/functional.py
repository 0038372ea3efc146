"""Metrics computed directly, with no download: accuracy, macro-F1, entity F1, confidence intervals.

These are the single source of truth for scores; the `evaluate.Metric` modules next to this file
wrap them for users of the `evaluate` library (loaded by path, so they work offline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import t as student_t
from seqeval.metrics import f1_score as _seqeval_f1
from seqeval.metrics import precision_score as _seqeval_precision
from seqeval.metrics import recall_score as _seqeval_recall
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Fraction of predictions equal to their reference."""
    _check_pairs(predictions, references)
    return sum(int(p == r) for p, r in zip(predictions, references, strict=True)) / len(references)


def macro_f1(
    predictions: Sequence[int], references: Sequence[int], labels: Sequence[int] | None = None
) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: classes seen in either list):
    `sklearn.metrics.f1_score` with ``average="macro"``.

    A class in `labels` that is never predicted and never present scores F1 = 0
    (``zero_division=0``), as does a class that is present but never predicted.
    """
    _check_pairs(predictions, references)
    return float(
        f1_score(
            list(references),
            list(predictions),
            labels=None if labels is None else list(labels),
            average="macro",
            zero_division=0,
        )
    )


def to_iob2(tags: Sequence[str]) -> list[str]:
    """Convert one sentence's tags (IO such as ``person``/``I-person``, or IOB1/IOB2) to IOB2.

    In IO a run of the same type is one entity, so the first word of every run gets ``B-``.
    An existing ``B-`` is kept: two adjacent entities of one type stay two entities.

    Example:
        ```python
        >>> to_iob2(["O", "person", "person", "O", "I-loc", "B-loc", "I-loc"])
        ['O', 'B-person', 'I-person', 'O', 'B-loc', 'B-loc', 'I-loc']
        ```
    """
    out: list[str] = []
    prev_type: str | None = None
    for tag in tags:
        if tag == "O":
            out.append("O")
            prev_type = None
            continue
        prefix, _, etype = tag.partition("-") if tag[:2] in ("B-", "I-") else ("I", "", tag)
        if not etype:
            raise ValueError(
                f"Tag {tag!r} has a prefix but no entity type; expected e.g. 'B-person'."
            )
        if prefix == "B" or etype != prev_type:
            out.append(f"B-{etype}")
        else:
            out.append(f"I-{etype}")
        prev_type = etype
    return out


def entity_scores(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level micro precision / recall / F1 with seqeval in strict IOB2 mode.

    Both sides are converted with `to_iob2` first, so IO tags are scored as entities (a run of one
    type is one entity) rather than being silently misread by the strict scheme.
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predicted sentences but {len(references)} reference sentences."
        )
    for i, (p, r) in enumerate(zip(predictions, references, strict=True)):
        if len(p) != len(r):
            raise ValueError(f"Sentence {i}: {len(p)} predicted tags but {len(r)} reference tags.")
    y_pred = [to_iob2(p) for p in predictions]
    y_true = [to_iob2(r) for r in references]
    kwargs = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    # seqeval returns numpy floats, which json cannot write.
    return {
        "precision": float(_seqeval_precision(y_true, y_pred, **kwargs)),
        "recall": float(_seqeval_recall(y_true, y_pred, **kwargs)),
        "f1": float(_seqeval_f1(y_true, y_pred, **kwargs)),
    }


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and half-width of a Student-t confidence interval over per-episode values.

    Returns ``{"mean", "ci", "std", "n"}`` where the interval is ``mean ± ci``; ``ci`` is NaN for
    a single value (no spread to estimate).
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value.")
    mean = sum(values) / n
    if n == 1:
        return {"mean": float(mean), "ci": float("nan"), "std": float("nan"), "n": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return {"mean": float(mean), "ci": float(half), "std": float(std), "n": n}


PERCENT_METRICS = ("accuracy", "macro_f1", "f1", "precision", "recall")
"""Scores in [0, 1] that the result tables show in %."""


def format_score(metric: str, value: float | None) -> str:
    """A score rounded in the result tables' units: ``"33.3 %"`` for the `PERCENT_METRICS`
    (and their ``_ci95`` half-widths), four significant digits for anything else (a loss).

    Example:
        ```python
        >>> format_score("accuracy", 1 / 3), format_score("loss", 1.234567)
        ('33.3 %', '1.235')
        ```
    """
    if value is None or value != value:
        return "n/a"
    if metric.removesuffix("_ci95") in PERCENT_METRICS:
        return f"{100 * value:.1f} %"
    return f"{value:.4g}"


def _check_pairs(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; they must pair up."
        )
    if len(references) == 0:
        raise ValueError("No references to score.")
