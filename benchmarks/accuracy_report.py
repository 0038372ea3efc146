"""Turning accuracy-benchmark results into verdicts, a Markdown report and a plot.

The verdict of a setting compares the best metanlp variant (highest mean) with SetFit and with
plain fine-tuning in two ways: unpaired (do the two 95% intervals overlap?) and paired (the
interval of the per-episode difference on the episodes both were scored on). "Above" in the
README sense needs the unpaired intervals to be disjoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.accuracy_setup import EARLIERPOLICY_SUFFIX, FT_SUFFIX, METANLP_METHODS, variant_of
from benchmarks.common import markdown_table, provenance_markdown, write_json, write_markdown

BASELINE_NAMES = {
    "finetune": "fine-tune (no meta-training)",
    "frozen_protos": "frozen prototypes",
    "logreg": "frozen logistic regression",
    "setfit": "SetFit",
}
GENERAL = "general"
GENERAL_VERSUS = (
    "setfit", "finetune", "logreg", "frozen_protos", "general-nopolicy", "general-earlierpolicy",
)  # fmt: skip


def main_metric(kind: str) -> str:
    """Accuracy for classification, entity micro-F1 for NER."""
    return "f1" if kind == "ner" else "accuracy"


def compare(a: Mapping[str, Any], b: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """``a`` vs ``b``: means, intervals, whether they are disjoint, and the paired difference."""
    from metanlp.evaluation import paired_difference

    sa, sb = a["summary"][metric], b["summary"][metric]
    lo_a, hi_a = sa["mean"] - _ci(sa), sa["mean"] + _ci(sa)
    lo_b, hi_b = sb["mean"] - _ci(sb), sb["mean"] + _ci(sb)
    paired = paired_difference(a, b, metric)
    if lo_a > hi_b:
        verdict = "above (CIs disjoint)"
    elif hi_a < lo_b:
        verdict = "below (CIs disjoint)"
    else:
        verdict = "above, CIs overlap" if sa["mean"] > sb["mean"] else "below, CIs overlap"
    return {
        "method": a["method"],
        "other": b["method"],
        "mean": sa["mean"],
        "ci": sa["ci"],
        "n": sa["n"],
        "other_mean": sb["mean"],
        "other_ci": sb["ci"],
        "other_n": sb["n"],
        "verdict": verdict,
        "paired_diff": paired,
    }


def verdicts(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Best metanlp variant of a setting and how it compares with SetFit and fine-tuning."""
    results = {r["method"]: r for r in entry.get("results", [])}
    if not results:
        return {}
    metric = main_metric(next(iter(results.values()))["kind"])
    ours = [r for name, r in results.items() if variant_of(name)]
    if not ours:
        return {}
    best = max(ours, key=lambda r: r["summary"][metric]["mean"])
    out: dict[str, Any] = {"metric": metric, "best": best["method"]}
    for other in ("setfit", "finetune", "frozen_protos"):
        if other in results:
            out[other] = compare(best, results[other], metric)
    return out


def merge_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One record from several runs on the same fixed episodes (later runs win per method).

    Runs may split the work (methods, settings or episode ranges run in separate processes,
    SetFit on another machine); a method's episodes from two runs add up when they are
    disjoint; episodes are paired by their index in the setting's episode file, so results from
    different runs compare exactly like results from one. Every run's provenance is kept.
    """
    if not records:
        raise ValueError("merge_records needs at least one results record.")
    from benchmarks.common import provenance

    merged: dict[str, Any] = {
        "provenance": provenance(),
        "merged_from": [r["provenance"] for r in records],
        "size": records[-1]["size"],
        "config": dict(records[-1]["config"]),
        "variants": records[-1]["variants"],
        "train_seconds": {},
        "settings": [],
    }
    given = {g for r in records for g in (r["config"].get("learner") or [])}
    merged["config"]["learner"] = sorted(given)
    by_name: dict[str, dict[str, Any]] = {}
    for record in records:
        merged["train_seconds"].update(record.get("train_seconds", {}))
        for entry in record["settings"]:
            into = by_name.setdefault(entry["setting"], {**entry, "results": [], "seconds": 0})
            methods = {r["method"]: r for r in into.get("results", [])}
            for r in entry.get("results", []):
                methods[r["method"]] = _join(methods.get(r["method"]), r)
            into.update({k: v for k, v in entry.items() if k not in ("results", "seconds")})
            into["results"] = list(methods.values())
            into["seconds"] = into.get("seconds", 0) + entry.get("seconds", 0)
    merged["settings"] = list(by_name.values())
    # What the header reports: counts as merged, steps of the runs that scored metanlp variants.
    counts = [(r["method"], _n(r)) for e in merged["settings"] for r in e.get("results", [])]
    merged["config"]["episodes"] = max((n for _, n in counts), default=0)
    merged["config"]["setfit_episodes"] = max((n for m, n in counts if m == "setfit"), default=0)
    steps = {
        r["config"]["train_steps"]
        for r in records
        if any(variant_of(m) for m in r["config"]["methods"]) and "train_steps" in r["config"]
    }
    if steps:
        merged["config"]["train_steps"] = steps.pop() if len(steps) == 1 else sorted(steps)
    merged["config"]["methods"] = sorted({m for r in records for m in r["config"]["methods"]})
    return merged


def _n(result: Mapping[str, Any]) -> int:
    return int(next(iter(result["summary"].values()))["n"]) if result["summary"] else 0


def _join(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Mapping[str, Any]:
    """Episodes of one method from two runs: disjoint episode sets add up, otherwise new wins."""
    from metanlp.metrics.functional import mean_ci

    if old is None or {e["index"] for e in old["episodes"]} & {e["index"] for e in new["episodes"]}:
        return new
    episodes = sorted([*old["episodes"], *new["episodes"]], key=lambda e: e["index"])
    summary = {m: mean_ci([e[m] for e in episodes]) for m in new["summary"]}
    seconds = old["seconds"] + new["seconds"]
    return {**new, "episodes": episodes, "summary": summary, "seconds": round(seconds, 3)}


def write_results(record: dict[str, Any], out: Path, stem: str) -> tuple[Path, Path, Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` under ``out``."""
    for entry in record["settings"]:
        if entry.get("results"):
            entry["verdict"] = verdicts(entry)
    json_path = write_json(out / f"{stem}.json", record)
    md_path = write_markdown(
        out / f"{stem}.md", "Accuracy on held-out few-shot tasks", markdown(record)
    )
    png_path = plot(record, out / f"{stem}.png")
    return json_path, md_path, png_path


def markdown(record: Mapping[str, Any]) -> list[str]:
    cfg = record["config"]
    sections = [
        provenance_markdown(record["provenance"]),
        f"Size `{record['size']}`: {'up to ' if record.get('merged_from') else ''}"
        f"{cfg['episodes']} test episodes per setting (SetFit: the first "
        f"{cfg['setfit_episodes']}; each table gives the count per method), "
        f"{_training(cfg)}, "
        f"fine-tune baseline {cfg['finetune_steps']} steps. Mean ± 95% CI half-width, in %.",
        summary_table(record),
    ]
    if any(r["method"] == GENERAL for e in record["settings"] for r in e.get("results", [])):
        sections.insert(3, general_table(record))
    if record.get("merged_from"):
        runs = "\n".join(f"- `{p.get('command')}` ({p.get('date')})" for p in record["merged_from"])
        sections.insert(
            2, f"Merged from {len(record['merged_from'])} runs on the same episodes:\n\n{runs}"
        )
    for entry in record["settings"]:
        if "skipped" in entry:
            sections.append(f"## {entry['setting']}\n\nSkipped: {entry['skipped']}")
            continue
        rows = []
        for r in sorted(entry["results"], key=_method_order):
            s = r["summary"]
            n = next(iter(s.values()))["n"]
            metrics = [_pct(s.get(m)) for m in ("accuracy", "macro_f1", "f1")]
            rows.append([_label(r["method"]), n, *metrics, r["seconds"] / max(n, 1)])
        table = markdown_table(
            ["method", "episodes", "accuracy", "macro-F1", "entity F1", "s / episode"], rows
        )
        notes = ""
        if entry.get("setfit_skipped"):
            notes = f"\n\nSetFit not run: {entry['setfit_skipped']}."
        sections.append(f"## {entry['title']} (`{entry['setting']}`)\n\n{table}{notes}")
    return sections


def summary_table(record: Mapping[str, Any]) -> str:
    rows = []
    for entry in record["settings"]:
        v = entry.get("verdict") or {}
        if not v:
            continue
        best = v.get("setfit") or v.get("finetune")
        rows.append(
            [
                entry["setting"],
                v["best"],
                _pm(best["mean"], best["ci"]) if best else "-",
                _pm(v["setfit"]["other_mean"], v["setfit"]["other_ci"]) if "setfit" in v else "-",
                v["setfit"]["verdict"] if "setfit" in v else "-",
                _paired(v.get("setfit")),
                _pm(v["finetune"]["other_mean"], v["finetune"]["other_ci"])
                if "finetune" in v
                else "-",
                v["finetune"]["verdict"] if "finetune" in v else "-",
                _paired(v.get("finetune")),
            ]
        )
    header = ["setting", "best metanlp", "its score", "SetFit", "vs SetFit",
              "paired diff vs SetFit", "fine-tune", "vs fine-tune",
              "paired diff vs fine-tune"]  # fmt: skip
    return "## Summary\n\n" + markdown_table(header, rows)


def general_table(record: Mapping[str, Any]) -> str:
    """The general learner (with its policy) against each baseline, paired, and its time."""
    rows = []
    for entry in record["settings"]:
        results = {r["method"]: r for r in entry.get("results", [])}
        if GENERAL not in results:
            continue
        metric = main_metric(results[GENERAL]["kind"])
        ours = results[GENERAL]
        n = _n(ours)
        row = [
            entry["setting"],
            _pct(ours["summary"][metric]),
            f"{ours['seconds'] / max(n, 1):.1f}",
        ]
        for other in GENERAL_VERSUS:
            row.append(_paired(compare(ours, results[other], metric)) if other in results else "-")
        if "setfit" in results:
            fit = results["setfit"]
            row.append(f"{fit['seconds'] / max(_n(fit), 1):.0f}")
        else:
            row.append("-")
        rows.append(row)
    header = ["setting", "general learner", "s / episode", *(f"− {_label(o)}" for o in GENERAL_VERSUS),
              "SetFit s / episode"]  # fmt: skip
    return (
        "## The general learner against each alternative (paired per episode, in points)\n\n"
        + markdown_table(header, rows)
    )


def plot(record: Mapping[str, Any], path: Path) -> Path:
    """One panel per setting: each method's mean with its 95% CI as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in record["settings"] if e.get("results")]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, max(len(entries), 1), figsize=(4.2 * max(len(entries), 1), 4.2),
                             squeeze=False)  # fmt: skip
    for ax, entry in zip(axes[0], entries, strict=False):
        metric = main_metric(entry["results"][0]["kind"])
        results = sorted(entry["results"], key=_method_order)
        names = [r["method"] for r in results]
        means = [100 * r["summary"][metric]["mean"] for r in results]
        errs = [100 * _ci(r["summary"][metric]) for r in results]
        colors = ["tab:blue" if variant_of(n) else "tab:orange" if n == "setfit" else "tab:gray"
                  for n in names]  # fmt: skip
        ax.bar(range(len(names)), means, yerr=errs, color=colors, capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(entry["setting"], fontsize=9)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Held-out few-shot tasks (blue: metanlp, orange: SetFit, grey: baselines)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ci(stat: Mapping[str, Any]) -> float:
    ci = stat.get("ci")
    return 0.0 if ci is None or not math.isfinite(ci) else float(ci)


def _pct(stat: Mapping[str, Any] | None) -> str:
    return "–" if stat is None else _pm(stat["mean"], stat["ci"])


def _pm(mean: float, ci: float | None) -> str:
    if ci is None or not math.isfinite(ci):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * ci:.1f}"


def _paired(c: Mapping[str, Any] | None) -> str:
    if not c or not c.get("paired_diff"):
        return "-"
    d = c["paired_diff"]
    return f"{_pm(d['mean'], d['ci'])} (n={d['n']})"


def _method_order(result: Mapping[str, Any]) -> int:
    order = [*METANLP_METHODS, *BASELINE_NAMES]
    return order.index(result["method"]) if result["method"] in order else len(order)


def _label(method: str) -> str:
    if method == "general-nopolicy":
        return "metanlp general, no policy"
    if method.endswith(EARLIERPOLICY_SUFFIX):
        return f"metanlp {method.removesuffix(EARLIERPOLICY_SUFFIX)}, earlier policy"
    if method.endswith(FT_SUFFIX):
        return f"metanlp {method.removesuffix(FT_SUFFIX)} + test-time fine-tune"
    return BASELINE_NAMES.get(method, f"metanlp {method}")


__all__: Sequence[str] = ["compare", "main_metric", "verdicts", "write_results"]


def _training(cfg: Mapping[str, Any]) -> str:
    """How the metanlp variants were obtained: trained here, or saved learners (``--learner``)."""
    given = cfg.get("learner") or []
    trained = f"{cfg['train_steps']} meta-training steps per variant trained here"
    if not given:
        return trained
    return f"saved learners given for {', '.join(f'`{g}`' for g in given)} (not trained here); {trained}"
