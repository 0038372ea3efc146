"""Summaries and result files (JSON, Markdown, PNG) of ``bench_vs_peers.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: `python benchmarks/vs_peers_report.py X.json`
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    GIB,
    gradient_difference,
    markdown_table,
    median,
    provenance_markdown,
    ratio,
    write_grouped_bars,
    write_json,
    write_markdown,
)

REFERENCE = "metanlp"


def summarize(
    runs: Sequence[Mapping[str, Any]], cases: Sequence[str], impls: Sequence[str]
) -> dict:
    """Per case and implementation: status, medians, metanlp's ratios and gradient differences."""
    from safetensors.torch import load_file

    out: dict[str, dict[str, dict]] = {}
    for case in cases:
        out[case] = {}
        ref_grads = None
        for impl in impls:
            mine = [r for r in runs if r["case"] == case and r["impl"] == impl]
            if not mine:
                continue
            ok = [r for r in mine if r["status"] == "ok"]
            first = mine[0]
            row: dict[str, Any] = {
                "status": first["status"] if not ok else "ok",
                "repeats": len(ok),
            }
            if not ok:
                row.update(
                    error=first.get("error"), where=first.get("where"), phase=first.get("phase")
                )
            else:
                row["step_s"] = median(r["step_s"][0] for r in ok)
                row["step_s_all"] = [round(r["step_s"][0], 3) for r in ok]
                row["cpu_s"] = median(r["cpu_s"][0] for r in ok)
                row["peak_step_gib"] = median(r["peak_rss_step_bytes"][0] / GIB for r in ok)
                row["rss_before_gib"] = median((r.get("rss_before_bytes") or 0) / GIB for r in ok)
                row["process_peak_gib"] = median(r["process_peak_rss_bytes"] / GIB for r in ok)
                row["adapted_parameters"] = ok[0].get("adapted_parameters")
                grads_path = next((r.get("grads_path") for r in ok if r.get("grads_path")), None)
                if grads_path and Path(grads_path).is_file():
                    grads = load_file(grads_path)
                    row["grad_norm"] = float(
                        sum(g.double().pow(2).sum() for g in grads.values()) ** 0.5
                    )
                    if impl == REFERENCE:
                        ref_grads = grads
                    elif ref_grads is not None:
                        row["grad_diff"] = gradient_difference(grads, ref_grads)
            out[case][impl] = row
        ref = out[case].get(REFERENCE, {})
        for impl, row in out[case].items():
            if impl != REFERENCE and row["status"] == "ok":
                row["metanlp_time_ratio"] = ratio(ref.get("step_s"), row["step_s"])
                row["metanlp_cpu_ratio"] = ratio(ref.get("cpu_s"), row["cpu_s"])
                row["metanlp_peak_ratio"] = ratio(ref.get("peak_step_gib"), row["peak_step_gib"])
    return out


def write_reports(
    stem: Path, prov: Mapping, settings: Mapping, summary: Mapping, runs: Sequence[Mapping]
) -> list[Path]:
    """``stem.json`` (everything), ``stem.md`` (tables) and ``stem.png`` (time and memory bars)."""
    json_path = write_json(stem.with_suffix(".json"), {"provenance": prov, "settings": settings,
                                                      "summary": summary, "runs": runs})  # fmt: skip
    size = settings["size"]
    header = ["case", "implementation", "status", "s / meta-step", "CPU s / meta-step", "peak RSS GiB",
              "metanlp time ratio", "metanlp CPU ratio", "metanlp memory ratio", "grad norm",
              "grad max abs diff", "grad rel diff"]  # fmt: skip
    rows, failures = [], []
    for case, impls in summary.items():
        for impl, r in impls.items():
            diff = r.get("grad_diff", {})
            rows.append([case, impl, r["status"], r.get("step_s"), r.get("cpu_s"), r.get("peak_step_gib"),
                         r.get("metanlp_time_ratio"), r.get("metanlp_cpu_ratio"), r.get("metanlp_peak_ratio"),
                         r.get("grad_norm"), diff.get("max_abs"), diff.get("rel")])  # fmt: skip
            if r["status"] != "ok":
                failures.append(f"- **{impl}**, `{case}` ({r['status']}, {r.get('phase')}): "
                                f"`{' '.join((r.get('error') or '').split())[:400]}` at `{r.get('where')}`")  # fmt: skip
    intro = (
        f"MiniLM (eager attention, mean pooling, linear head), {size['n_way']}-way {size['k_shot']}-shot "
        f"+ {size['q_query']} query per class, seq len {size['seq_len']}, meta-batch {size['meta_batch']}, "
        f"{size['inner_steps']} inner SGD steps (lr {size['inner_lr']}), dropout off; BBC News episodes "
        f"{settings['tasks']}. Each implementation in its own process, alternated, median of "
        f"{settings['repeats']} repeat(s), {settings['threads']} threads on {settings['device']}. "
        "*Ratios are metanlp / peer* (below 1: metanlp faster or leaner). Wall time is noisy on a "
        "shared machine; CPU seconds (all threads of the process) are steadier. Peak RSS is the process's "
        "resident peak during the timed meta-step (model and data included). Gradient differences are "
        "against metanlp's meta-gradient: max elementwise |Δ| and ‖Δ‖/‖g‖ over all adapted tensors."
    )
    cases = "\n".join(f"- `{c}`: {d['params']} adapted, {'first' if d['first_order'] else 'second'} order"
                      + (f" (top {d['top_layers']} layers + head)" if d["params"] == "top" else "")
                      for c, d in settings["cases"].items())  # fmt: skip
    sections = [intro, "Cases:\n" + cases, markdown_table(header, rows)]
    if failures:
        sections.append("What failed, with the exact error:\n\n" + "\n".join(failures))
    sections.append("Provenance:\n\n" + provenance_markdown(prov))
    md_path = write_markdown(
        stem.with_suffix(".md"), "metanlp vs learn2learn, TorchOpt, higher", sections
    )
    panels = [
        (
            "seconds per meta-step",
            {c: {i: r.get("step_s") for i, r in v.items()} for c, v in summary.items()},
        ),
        (
            "CPU seconds per meta-step",
            {c: {i: r.get("cpu_s") for i, r in v.items()} for c, v in summary.items()},
        ),
        (
            "peak RSS (GiB)",
            {c: {i: r.get("peak_step_gib") for i, r in v.items()} for c, v in summary.items()},
        ),
    ]
    png_path = write_grouped_bars(stem.with_suffix(".png"), panels,
                                  f"MAML meta-step, meta-batch {size['meta_batch']}, seq {size['seq_len']}, "
                                  f"{size['inner_steps']} inner steps ({settings['device']})")  # fmt: skip
    return [json_path, md_path, png_path]


def rerender(json_path: str | Path) -> list[Path]:
    """Rewrite the Markdown and PNG of a results JSON (e.g. after a change of layout)."""
    import json

    data = json.loads(Path(json_path).read_text())
    return write_reports(
        Path(json_path).with_suffix(""),
        data["provenance"],
        data["settings"],
        data["summary"],
        data["runs"],
    )


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print("wrote", ", ".join(str(p) for p in rerender(arg)))
