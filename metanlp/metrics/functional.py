"""Metrics computed directly, with no download: accuracy, macro-F1, entity F1, confidence intervals.

These are the single source of truth for scores; the `evaluate.Metric` modules next to this file
wrap them for users of the `evaluate` library (loaded by path, so they work offline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from seqeval.metrics import f1_score as _seqeval_f1
from seqeval.metrics import precision_score as _seqeval_precision
from seqeval.metrics import recall_score as _seqeval_recall
from seqeval.scheme import IOB2


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    """Fraction of predictions equal to their reference."""
    _check_pairs(predictions, references)
    return sum(int(p == r) for p, r in zip(predictions, references, strict=True)) / len(references)


def macro_f1(
    predictions: Sequence[int], references: Sequence[int], labels: Sequence[int] | None = None
) -> float:
    """Unweighted mean of per-class F1 over `labels` (default: classes seen in either list).

    A class that is never predicted and never present scores nothing (it is not in `labels` by
    default); a class that is present but never predicted scores F1 = 0, as in scikit-learn.
    """
    _check_pairs(predictions, references)
    classes = sorted(set(references) | set(predictions)) if labels is None else list(labels)
    scores = []
    for c in classes:
        tp = sum(1 for p, r in zip(predictions, references, strict=True) if p == c and r == c)
        fp = sum(1 for p, r in zip(predictions, references, strict=True) if p == c and r != c)
        fn = sum(1 for p, r in zip(predictions, references, strict=True) if p != c and r == c)
        denom = 2 * tp + fp + fn
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return sum(scores) / len(scores)


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


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with integer `df` degrees of freedom (no scipy).

    The CDF has a closed form for integer df (Abramowitz & Stegun 26.7.3-4); the quantile is
    found by bisection on it, to about 1e-12.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}.")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}.")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _t_cdf(t: float, df: int) -> float:
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        series, term = 0.0, 1.0
        if df > 1:
            series = 1.0
            for k in range(1, (df - 1) // 2):
                term *= c2 * (2 * k) / (2 * k + 1)
                series += term
        a = 2.0 / math.pi * (theta + s * math.cos(theta) * series)
    else:
        series, term = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            series += term
        a = s * series
    return 0.5 + 0.5 * a


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
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": float(mean), "ci": float(half), "std": float(std), "n": n}


def _check_pairs(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; they must pair up."
        )
    if len(references) == 0:
        raise ValueError("No references to score.")
