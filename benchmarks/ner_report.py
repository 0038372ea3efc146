"""Scores and report of the NER benchmark (`benchmarks.bench_ner`): which stage fails, detection
or typing, and the paired differences against the decomposed learner, as JSON, Markdown and PNG."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import provenance_markdown
from metanlp.evaluation import paired_difference
from metanlp.meta.spans import bio_spans, tags_to_bio
from metanlp.metrics.functional import mean_ci

METRICS = {
    "f1": "entity F1",
    "detection_f1": "span-detection F1",
    "typing_accuracy": "typing accuracy",
    "gold_span_typing": "typing of gold spans",
}
FIRST = "decomposed"


def _mentions(tags: Sequence[str]) -> dict[tuple[int, int], str]:
    """``{(start, end): type}`` of one sentence's IO or IOB2 tags."""
    spans = bio_spans(tags_to_bio(tags))
    return {(a, b): tags[a][2:] if tags[a][:2] in ("B-", "I-") else tags[a] for a, b in spans}


def span_scores(
    predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Span-detection micro P/R/F1 (type ignored) and typing accuracy on exactly found mentions.

    Example:
        ```python
        >>> span_scores([["B-a", "O", "B-b"]], [["B-a", "O", "B-a"]])
        {'detection_precision': 1.0, 'detection_recall': 1.0, 'detection_f1': 1.0, 'typing_accuracy': 0.5}
        ```
    """
    found = correct = n_pred = n_gold = typed = 0
    for p, g in zip(predicted, gold, strict=True):
        pm, gm = _mentions(p), _mentions(g)
        n_pred, n_gold = n_pred + len(pm), n_gold + len(gm)
        hits = set(pm) & set(gm)
        found += len(hits)
        correct += sum(pm[s] == gm[s] for s in hits)
        typed += len(hits)
    precision = found / n_pred if n_pred else 0.0
    recall = found / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"detection_precision": precision, "detection_recall": recall, "detection_f1": f1,
            "typing_accuracy": correct / typed if typed else float("nan")}  # fmt: skip


def _summary(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, float]:
    nan = float("nan")  # NaN: nothing found (or the method has no such score)
    values = [r[metric] for r in rows if r.get(metric, nan) == r.get(metric, nan)]
    return mean_ci(values) if values else {"mean": float("nan"), "ci": float("nan"), "n": 0}


def write_ner_results(record: Mapping[str, Any], out: Path, stem: str) -> None:
    """``<stem>.json`` (every per-episode value), ``<stem>.md`` and ``<stem>.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Few-shot NER on held-out WNUT-16 types ({stem})", "",
             provenance_markdown(record["provenance"]), "",
             *[f"- Merged with: `{m['provenance']['command']}` ({m['provenance']['date']})"
               for m in record.get("merged_from", [])[1:]], "",
             f"Meta-trained learners: {record['steps']} meta-steps x 2 episodes (1~2-shot, "
             "frequent types: 3-way, or all of them where the method says so). Mean ± 95% CI half-width over the episodes, in %. Typing accuracy "
             "counts the gold mentions a method found exactly (its n is the episodes where it "
             "found any).", *([record["note"]] if record.get("note") else []), ""]  # fmt: skip
    for setting, results in record["settings"].items():
        for r in results:
            r["summary"].update({m: _summary(r["episodes"], m) for m in METRICS})
        lines += [f"## {setting}", "", "| method | episodes | " + " | ".join(METRICS.values())
                  + " | s / episode |", "|---" * (len(METRICS) + 3) + "|"]  # fmt: skip
        for r in results:
            cells = [_fmt(r["summary"][m]) for m in METRICS]
            n = r["summary"]["f1"]["n"]
            name = r["method"] + (" (earlier run)" if r.get("reused_from") else "")
            lines.append(f"| {name} | {n} | " + " | ".join(cells)
                         + f" | {r['seconds'] / max(n, 1):.2f} |")  # fmt: skip
        decomposed = [r for r in results if r["method"].startswith(FIRST)]
        best = max(decomposed, key=lambda r: r["summary"]["f1"]["mean"], default=None)
        leaders = [r for r in decomposed if r["method"] == FIRST]
        leaders += [best] if best is not None and best not in leaders else []
        # The method chosen on validation (bench_ner's CHOSEN) is paired whatever it scores here.
        leaders += [r for r in results if r["method"] == record.get("lead") and r not in leaders]
        for first in leaders:
            lines += ["", f"Paired per episode, {first['method']} minus each other method "
                      "(entity F1, points):", "",
                      "| minus | episodes | difference | 95% interval excludes 0 |",
                      "|---|---|---|---|"]  # fmt: skip
            for other in results:
                if other is first or (first is not leaders[0] and other in decomposed):
                    continue
                d = paired_difference(first, other, "f1")
                other.setdefault("paired", {})[first["method"]] = d
                excludes = abs(d["mean"]) > d["ci"]
                lines.append(f"| {other['method']} | {d['n']} | {100 * d['mean']:+.1f} ± "
                             f"{100 * d['ci']:.1f} | {'yes' if excludes else 'no'} |")  # fmt: skip
        lines.append("")
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1, default=float), encoding="utf-8")
    (out / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    _plot(record, out / f"{stem}.png")


def _fmt(stat: Mapping[str, float]) -> str:
    if stat["n"] == 0 or stat["mean"] != stat["mean"]:
        return "–"
    ci = stat["ci"]
    return f"{100 * stat['mean']:.1f} ± {100 * ci:.1f}" if ci == ci else f"{100 * stat['mean']:.1f}"


def _plot(record: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(record["settings"])
    fig, axes = plt.subplots(len(settings), len(METRICS), figsize=(15, 4 * len(settings)),
                             squeeze=False)  # fmt: skip
    for i, setting in enumerate(settings):
        results = record["settings"][setting]
        names = [r["method"] for r in results]
        for j, (metric, label) in enumerate(METRICS.items()):
            stats = [r["summary"][metric] for r in results]
            means = [100 * s["mean"] if s["n"] else 0 for s in stats]
            cis = [100 * s["ci"] if s["n"] > 1 and s["ci"] == s["ci"] else 0 for s in stats]
            ax = axes[i][j]
            ax.barh(range(len(names)), means, xerr=cis, color="tab:blue", alpha=0.7)
            ax.set_yticks(range(len(names)), names if j == 0 else [""] * len(names), fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{setting}: {label} (%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
