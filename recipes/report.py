"""A recipe run's report: ``summary.json``, ``summary.md`` and ``summary.png`` from the results
of `metanlp.evaluation.evaluate`, with the paired per-episode differences between methods.

    python recipes/report.py outputs/sentiment_domains   # rewrite a finished run's summary
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import slug


def write_report(
    args: argparse.Namespace,
    title: str,
    settings: Sequence[tuple[str, list[dict[str, Any]] | str]],
    info: Mapping[str, Any],
    started: float,
) -> Path:
    """``summary.json``, ``summary.md`` (one table row per setting × method, then the paired
    per-episode differences of the first method against each other one) and ``summary.png``.

    Args:
        settings: ``(setting name, evaluate() results)`` or ``(setting name, why it was skipped)``.
    """
    seconds = time.perf_counter() - started
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {
        "recipe": args.recipe,
        "title": title,
        "size": args.size_name,
        **asdict(args.size),
        "seconds_total": round(seconds, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average at end {load}",
        "training": dict(info),
        "skipped": {name: why for name, why in settings if isinstance(why, str)},
    }
    return _write_summary(Path(args.out), meta, settings)


def resummarize(out: str | os.PathLike) -> Path:
    """Rewrite a finished run's summary from its saved per-setting ``results.json`` files."""
    from metanlp.evaluation import load_results

    out = Path(out)
    saved = json.loads((out / "summary.json").read_text())
    meta = saved["run"]
    meta.setdefault("title", (out / "summary.md").read_text().splitlines()[0].lstrip("# "))
    folders = dict.fromkeys((r["setting"], r["folder"]) for r in saved["rows"])
    settings = [(name, load_results(out / folder)) for name, folder in folders]
    settings += list(meta["skipped"].items())
    return _write_summary(out, meta, settings)


def _write_summary(
    out: Path, meta: dict[str, Any], settings: Sequence[tuple[str, list[dict[str, Any]] | str]]
) -> Path:
    from metanlp.evaluation import paired_difference

    out.mkdir(parents=True, exist_ok=True)
    rows, paired = [], []
    for setting, results in settings:
        if isinstance(results, str):
            continue
        for r in results:
            stats = {m: {k: s[k] for k in ("mean", "ci", "n")} for m, s in r["summary"].items()}
            row = {"setting": setting, "folder": slug(setting), "method": r["method"]}
            rows.append({**row, "seconds": r["seconds"], **stats})
        metric = "accuracy" if "accuracy" in results[0]["summary"] else "f1"
        for other in results[1:]:
            diff = paired_difference(results[0], other, metric)
            if diff is not None:
                paired.append({"setting": setting, "method": results[0]["method"],
                               "minus": other["method"], "metric": metric, **diff})  # fmt: skip
    (out / "summary.json").write_text(
        json.dumps({"run": meta, "rows": rows, "paired": paired}, indent=2, default=str)
    )
    table = _markdown(rows, meta["skipped"])
    if paired:
        table += "\n\nPaired per episode (same episodes; an interval that excludes 0 is a real difference):\n\n"
        table += _paired_markdown(paired)
    minutes = meta["seconds_total"] / 60
    (out / "summary.md").write_text(
        f"# {meta['title']}\n\nsize `{meta['size']}`, {minutes:.1f} min in all "
        f"({meta['machine']})\n\n{table}\n"
    )
    if rows:
        _plot(rows, meta["title"], out / "summary.png")
    print(f"\n{meta['title']}\n{table}\n\nwrote {out}/summary.{{json,md,png}} in {minutes:.1f} min")
    return out


def _paired_markdown(paired: list[dict[str, Any]]) -> str:
    lines = ["| setting | difference | episodes | mean ± 95% CI (points) |", "|---|---|---|---|"]
    for p in paired:
        ci = p["ci"]
        cell = f"{100 * p['mean']:+.1f}" + ("" if ci != ci else f" ± {100 * ci:.1f}")
        excludes_zero = ci == ci and (p["mean"] - ci > 0 or p["mean"] + ci < 0)
        cell = f"**{cell}**" if excludes_zero else cell
        lines.append(f"| {p['setting']} | {p['method']} − {p['minus']} ({p['metric']}) | "
                     f"{p['n']} | {cell} |")  # fmt: skip
    return "\n".join(lines)


def _markdown(rows: list[dict[str, Any]], skipped: Mapping[str, str]) -> str:
    metrics = [m for m in ("accuracy", "macro_f1", "f1") if any(m in r for r in rows)]
    lines = ["| setting | method | episodes | " + " | ".join(metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]  # fmt: skip
    for r in rows:
        n = next(r[m]["n"] for m in metrics if m in r)
        cells = [_pct(r[m]) if m in r else "–" for m in metrics]
        lines.append(f"| {r['setting']} | {r['method']} | {n} | " + " | ".join(cells) + " |")
    for setting, why in skipped.items():
        lines.append(
            f"| {setting} | not run: {why} | – | " + " | ".join("–" for _ in metrics) + " |"
        )
    return "\n".join(lines)


def _pct(stat: Mapping[str, Any]) -> str:
    ci = stat["ci"]
    if ci is None or ci != ci:
        return f"{100 * stat['mean']:.1f}"
    return f"{100 * stat['mean']:.1f} ± {100 * ci:.1f}"


def _plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "accuracy" if "accuracy" in rows[0] else "f1"
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings) + 2), 4))
    for j, method in enumerate(methods):
        xs, ys, es = [], [], []
        for i, setting in enumerate(settings):
            for r in rows:
                if r["setting"] == setting and r["method"] == method:
                    ci = r[metric]["ci"]
                    xs.append(i + (j - (len(methods) - 1) / 2) * width)
                    ys.append(100 * r[metric]["mean"])
                    es.append(0 if ci is None or ci != ci else 100 * ci)
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=method)
    ax.set_xticks(range(len(settings)), settings, rotation=20, ha="right")
    ax.set_ylabel(f"{metric} (%), mean ± 95% CI")
    ax.set_ylim(0, 100)  # tiny runs have CIs wider than the scale
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Rewrite a finished recipe run's summary.")
    parser.add_argument("out", help="the run's output folder, e.g. outputs/sentiment_domains")
    resummarize(parser.parse_args().out)
