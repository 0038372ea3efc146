"""Metric logs of a meta-training run: a plain JSONL file and a PNG learning curve.

The trainer sends the same records to Accelerate's trackers (TensorBoard); the JSONL file is
what scripts and tests read, and what the learning curve is drawn from.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"


class JsonlLogger:
    """Appends one JSON object per line: ``{"step": int, "split": str, **metrics}``.

    Args:
        path (`str` or `os.PathLike`): The file; its folder is created.
        resume_step (`int`, *optional*): When resuming, records logged after this step (by a run
            that was interrupted after its last checkpoint) are dropped, so the log reads like
            one uninterrupted run. Without it the file is started afresh.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = (
            [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
            if resume_step is not None
            else []
        )
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)

    def log(self, step: int, split: str, metrics: dict[str, float]) -> None:
        record = {
            "step": int(step),
            "split": split,
            **{k: _jsonable(v) for k, v in metrics.items()},
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than crash
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a metrics file written by :class:`JsonlLogger` (empty list when missing).

    A last line cut short (a run killed while logging) is dropped with a warning: it belongs to
    a step after the last checkpoint, which a resumed run logs again.

    Raises:
        ValueError: a line other than the last is not a JSON object (the message names the line).
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("not a record")
        except ValueError:
            if not any(rest.strip() for rest in lines[number:]):
                logger.warning("%s:%d is cut short (a killed run); it is ignored.", path, number)
                continue
            raise ValueError(
                f"{path}:{number} is not a metrics record: {line[:80]!r}. The file is damaged; "
                "delete that line (or the file, losing the logged history) and run again."
            ) from None
        records.append(record)
    return records


def plot_learning_curve(
    records: list[dict[str, Any]],
    path: str | os.PathLike,
    train_key: str = "query_loss",
    val_key: str = "accuracy",
) -> Path:
    """Draw meta-train loss and meta-validation accuracy against the meta-step into a PNG.

    Args:
        records (`list[dict]`): JSONL records (``split`` is ``"train"`` or ``"val"``).
        path (`str` or `os.PathLike`): Where to write the PNG.
        train_key (`str`, defaults to ``"query_loss"``): Metric of the train records to draw.
        val_key (`str`, defaults to ``"accuracy"``): Metric of the validation records to draw.

    Returns:
        `Path`: the PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; set here, not at import, to avoid side effects
    import matplotlib.pyplot as plt

    train = [
        (r["step"], r[train_key])
        for r in records
        if r.get("split") == "train" and _num(r.get(train_key))
    ]
    val = [
        (r["step"], r[val_key]) for r in records if r.get("split") == "val" and _num(r.get(val_key))
    ]
    for split, key, points in (("train", train_key, train), ("val", val_key, val)):
        logged = [r for r in records if r.get("split") == split]
        if logged and not points:  # a curve silently missing its line is worse than an error
            keys = sorted({k for r in logged for k in r} - {"step", "split"})
            raise ValueError(f"No {split} record has {key!r} to plot; the records have {keys}.")
    fig, ax_loss = plt.subplots(figsize=(7, 4))
    if train:
        ax_loss.plot(*zip(*train, strict=True), color="tab:blue", label=f"meta-train {train_key}")
    ax_loss.set_xlabel("meta-step")
    ax_loss.set_ylabel(f"meta-train {train_key}", color="tab:blue")
    ax_acc = ax_loss.twinx()
    if val:
        ax_acc.plot(
            *zip(*val, strict=True), color="tab:orange", marker="o", label=f"meta-val {val_key}"
        )
    ax_acc.set_ylabel(f"meta-val {val_key}", color="tab:orange")
    fig.suptitle("metanlp meta-training")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
