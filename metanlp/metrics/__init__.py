"""Offline metrics: direct functions and `evaluate` modules loaded by path.

`evaluate.load("accuracy")` downloads from the Hub and fails offline; `load_metric("accuracy")`
loads the module shipped in this folder instead.
"""

from __future__ import annotations

from pathlib import Path

from metanlp.metrics.functional import (
    accuracy,
    entity_scores,
    format_score,
    macro_f1,
    mean_ci,
    to_iob2,
)

METRIC_MODULES = {"accuracy": "accuracy.py", "macro_f1": "macro_f1.py", "entity_f1": "entity_f1.py"}

__all__ = [
    "METRIC_MODULES",
    "accuracy",
    "entity_scores",
    "format_score",
    "load_metric",
    "macro_f1",
    "mean_ci",
    "metric_path",
    "to_iob2",
]


def metric_path(name: str) -> Path:
    """Path of the local `evaluate` module for `name` (one of `METRIC_MODULES`)."""
    if name not in METRIC_MODULES:
        raise ValueError(f"Unknown metric {name!r}; metanlp ships {sorted(METRIC_MODULES)}.")
    return Path(__file__).with_name(METRIC_MODULES[name])


def load_metric(name: str):
    """Load a shipped metric as an `evaluate.EvaluationModule`, offline.

    Example:
        ```python
        >>> from metanlp.metrics import load_metric
        >>> load_metric("macro_f1").compute(predictions=[0, 1, 1], references=[0, 1, 0])
        {'macro_f1': 0.6666666666666666}
        ```
    """
    import evaluate

    return evaluate.load(str(metric_path(name)))
