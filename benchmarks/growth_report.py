"""Tables, the memory-growth summary and the figure of ``bench_growth.py`` (no model loaded here)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table, median, provenance_markdown, write_markdown

AXIS_LABELS = {"steps": "inner steps", "meta_batch": "meta-batch", "seq": "seq len"}
ALGO_LABELS = {
    "maml": "MAML, 2nd order",
    "maml-ckpt": "MAML, 2nd order + step ckpt",
    "fomaml": "FOMAML, 1st order",
    "imaml": "iMAML",
}


def floor_seconds(steps: int, meta_batch: int, fb_support_s: float, fb_query_s: float) -> float:
    """The floor of a meta-step: per task, ``steps`` plain forward+backward passes on the support
    batch and one on the query batch; ``meta_batch`` tasks.

    Example:
        ```python
        >>> floor_seconds(5, 4, fb_support_s=1.0, fb_query_s=1.0)  # (k + 1) x B x fb
        24.0
        ```
    """
    if steps < 0 or meta_batch < 1:
        raise ValueError(f"steps={steps!r} must be >= 0 and meta_batch={meta_batch!r} >= 1.")
    return meta_batch * (steps * fb_support_s + fb_query_s)


def summarize(runs: Sequence[Mapping[str, Any]], points: Mapping[str, Mapping]) -> list[dict]:
    """One row per (point, algorithm): medians over its processes; each process's floor ratio
    uses the floor measured in that same process."""
    rows = []
    for key, point in points.items():
        for algo in dict.fromkeys(r["algo"] for r in runs if r["point"] == key):
            mine = [r for r in runs if r["point"] == key and r["algo"] == algo]
            ok = [r for r in mine if r["status"] == "ok"]
            row: dict[str, Any] = {"point": key, "algo": algo, **point, "ok_runs": len(ok),
                                   "failed_runs": len(mine) - len(ok)}  # fmt: skip
            if not ok:
                row["error"] = mine[0].get("error")
                rows.append(row)
                continue
            for clock in ("cpu", "wall"):
                floors = [
                    floor_seconds(point["steps"], point["meta_batch"],
                                  r["floor"]["support"][f"{clock}_s"],
                                  r["floor"]["query"][f"{clock}_s"])
                    for r in ok
                ]  # fmt: skip
                row[f"{clock}_s"] = median(r[f"{clock}_s"] for r in ok)
                row[f"floor_{clock}_s"] = median(floors)
                row[f"floor_ratio_{clock}"] = median(
                    r[f"{clock}_s"] / f for r, f in zip(ok, floors, strict=True) if f > 0
                )
                row[f"fb_support_{clock}_s"] = median(
                    r["floor"]["support"][f"{clock}_s"] for r in ok
                )
            row["peak_mb"] = median(r["peak_above_model_mb"] for r in ok)
            rows.append(row)
    return rows


def axis_rows(rows: Sequence[Mapping], base: Mapping, axis: str) -> list[Mapping]:
    """The rows on one axis: every other coordinate at the base point, sorted by the axis value."""
    others = [a for a in AXIS_LABELS if a != axis]
    on = [r for r in rows if all(r[a] == base[a] for a in others)]
    return sorted(on, key=lambda r: r[axis])


def memory_growth(rows: Sequence[Mapping], base: Mapping) -> dict[str, dict]:
    """Per algorithm: peak memory above the model at the fewest and the most inner steps measured,
    the growth between them, MB per extra step and, for the others, the fraction of second-order
    MAML's growth they take off (``1 - growth / growth of maml``)."""
    out: dict[str, dict] = {}
    for r in axis_rows(rows, base, "steps"):
        if r.get("peak_mb") is None:
            continue
        g = out.setdefault(r["algo"], {"from_steps": r["steps"], "from_mb": r["peak_mb"]})
        g.update(to_steps=r["steps"], to_mb=r["peak_mb"])
    for g in out.values():
        g["growth_mb"] = g["to_mb"] - g["from_mb"]
        span = g["to_steps"] - g["from_steps"]
        g["mb_per_step"] = g["growth_mb"] / span if span else None
    ref = out.get("maml")
    for algo, g in out.items():
        same_span = ref and (ref["from_steps"], ref["to_steps"]) == (g["from_steps"], g["to_steps"])
        ok = algo != "maml" and same_span and ref["growth_mb"] > 0
        g["reduction_vs_maml"] = 1 - g["growth_mb"] / ref["growth_mb"] if ok else None
    return out


def growth_paragraph(growth: Mapping[str, Mapping]) -> str:
    """A sentence or two, from the numbers, on what checkpointing and iMAML do to the growth."""
    ref = growth.get("maml")
    if not ref or ref["to_steps"] == ref["from_steps"]:
        return "Memory growth with inner steps: not measured (needs `maml` on the steps axis)."
    text = (
        f"From {ref['from_steps']} to {ref['to_steps']} inner steps, second-order MAML's peak "
        f"memory above the model grows by {ref['growth_mb']:.0f} MB ({ref['from_mb']:.0f} -> "
        f"{ref['to_mb']:.0f} MB, {ref['mb_per_step']:.0f} MB per extra step)."
    )
    for algo in ("maml-ckpt", "imaml"):
        g = growth.get(algo)
        if g is None:
            continue
        cut = g["reduction_vs_maml"]
        share = f": {100 * cut:.0f} % less growth than MAML" if cut is not None else ""
        verb = "grows" if g["growth_mb"] >= 0 else "shrinks"
        text += (
            f" {ALGO_LABELS[algo]}: {verb} by {abs(g['growth_mb']):.0f} MB ({g['from_mb']:.0f} -> "
            f"{g['to_mb']:.0f} MB{share})."
        )
    return text


def floor_sentence(rows: Sequence[Mapping], base: Mapping) -> str:
    """The floor ratios (CPU) of first and second order at the base point."""
    at = {r["algo"]: r for r in rows if all(r[a] == base[a] for a in AXIS_LABELS)}
    parts = [
        f"{ALGO_LABELS[a]} {at[a]['floor_ratio_cpu']:.2f}x"
        for a in ("maml", "fomaml", "maml-ckpt", "imaml")
        if at.get(a, {}).get("floor_ratio_cpu") is not None
    ]
    if not parts:
        return "Ratio to the floor at the base point: not measured."
    return "Meta-step CPU time over its floor at the base point: " + ", ".join(parts) + "."


def write_reports(stem: Path, meta: Mapping, rows: Sequence[Mapping], runs: Sequence) -> None:
    """``<stem>.md`` (a table per axis, the growth paragraph, failures) and ``<stem>.png``."""
    base, growth = meta["base"], memory_growth(rows, meta["base"])
    algos = ", ".join(f"`{a}` ({', '.join(f'{k}={v}' for k, v in c.items())})"
                      for a, c in meta["algos"].items())  # fmt: skip
    sections = [
        f"MiniLM (eager attention, mean pooling), LoRA r=8 on query/value + head adapted, random "
        f"token ids; base point {base['n_way']}-way {base['shots']}-shot + {base['queries']} query "
        f"per class, seq len {base['seq']}, meta-batch {base['meta_batch']}, {base['steps']} inner "
        f"SGD steps (lr {meta['inner_lr']}), dropout off; one axis varied at a time. Algorithms: "
        f"{algos}. Each point and algorithm in its own process ({meta['threads']} thread(s)), "
        f"median of {meta['repeats']} process(es). *Peak MB* is the resident peak of the timed "
        "meta-step above the process's memory with model, episodes and algorithm built. *Floor* "
        "= meta-batch x (k x one plain forward+backward on the support + one on the query), "
        "measured in the same process; *x floor* = meta-step time / floor.",
        "## Memory growth and the floor\n\n"
        + growth_paragraph(growth)
        + "\n\n"
        + floor_sentence(rows, base),
    ]
    header = ["algorithm", "CPU s / meta-step", "wall s / meta-step", "peak MB above model",
              "floor CPU s", "x floor (CPU)", "x floor (wall)"]  # fmt: skip
    for axis in meta["axes"]:
        table = [
            [r[axis], ALGO_LABELS.get(r["algo"], r["algo"]), r.get("cpu_s"), r.get("wall_s"),
             _round(r.get("peak_mb"), 0), r.get("floor_cpu_s"),
             _round(r.get("floor_ratio_cpu"), 2), _round(r.get("floor_ratio_wall"), 2)]
            for r in axis_rows(rows, base, axis)
        ]  # fmt: skip
        label = AXIS_LABELS[axis]
        sections.append(f"## Against {label}\n\n" + markdown_table([label, *header], table))
    failed = [r for r in runs if r["status"] != "ok"]
    if failed:
        sections.append("## Failed processes\n\n" + "\n".join(
            f"- `{r['algo']}` at `{r['point']}` (repeat {r['repeat']}): {r['error']}" for r in failed
        ))  # fmt: skip
    sections.append("## Provenance\n\n" + provenance_markdown(meta))
    write_markdown(stem.with_suffix(".md"), "Cost growth of a meta-step and its floor", sections)
    write_figure(stem.with_suffix(".png"), rows, base, list(meta["axes"]))


def _round(x: float | None, digits: int) -> float | int | None:
    return None if x is None else (round(x) if digits == 0 else round(x, digits))


def write_figure(path: Path, rows: Sequence[Mapping], base: Mapping, axes: list[str]) -> None:
    """Rows: the axes; columns: CPU s per meta-step (floor dashed) and peak MB above the model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(dict.fromkeys(r["algo"] for r in rows))
    fig, grid = plt.subplots(len(axes), 2, figsize=(11, 3.4 * len(axes)), squeeze=False)
    for (ax_t, ax_m), axis in zip(grid, axes, strict=True):
        on = axis_rows(rows, base, axis)
        for i, algo in enumerate(algos):
            pts = [r for r in on if r["algo"] == algo and r.get("cpu_s") is not None]
            xs = [r[axis] for r in pts]
            style = {"marker": "o", "color": f"C{i}", "label": ALGO_LABELS.get(algo, algo)}
            ax_t.plot(xs, [r["cpu_s"] for r in pts], **style)
            ax_m.plot(xs, [r["peak_mb"] for r in pts], **style)
        values = sorted({r[axis] for r in on})
        floor = [median(r.get("floor_cpu_s") for r in on if r[axis] == v) for v in values]
        ax_t.plot(values, floor, "k--", lw=1, label="floor: (k+1) x B x fb")
        for ax, ylabel in ((ax_t, "CPU s / meta-step"), (ax_m, "peak MB above model")):
            ax.set_xlabel(AXIS_LABELS[axis])
            ax.set_ylabel(ylabel)
            ax.set_xticks(values)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    grid[0][0].legend(fontsize=8)
    fig.suptitle("Cost of one meta-step, one axis varied around the base point")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
