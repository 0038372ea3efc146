"""The general-learner ablation's tables (issue 17): SMLMT alone, labelled alone, hybrid.

Reads a merged `bench_accuracy.py` results file holding the recipe learners as the variants
``general_hybrid100``, ``general_smlmt`` and ``general_labelled`` (with and without their
policy) and ``frozen_protos``, and prints (or appends to a Markdown file) two tables: accuracy
per learner and setting, and the paired per-episode differences (95% t-intervals, in points;
bold where the interval excludes 0).

    python benchmarks/ablation_table.py benchmarks/results/accuracy_ablation.json \
        --append benchmarks/results/accuracy_ablation.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.accuracy_report import _paired, _pct, compare  # noqa: E402
from benchmarks.accuracy_setup import NOPOLICY_SUFFIX  # noqa: E402
from benchmarks.common import markdown_table  # noqa: E402

LEARNERS = {"general_smlmt": "SMLMT", "general_labelled": "labelled", "general_hybrid100": "hybrid"}
FROZEN = "frozen_protos"
HYBRID = "general_hybrid100"


def _cell(results: Mapping[str, Any], a: str, b: str) -> str:
    if a not in results or b not in results:
        return "-"
    c = compare(results[a], results[b], "accuracy")
    d = c["paired_diff"]
    # bold: the interval excludes 0
    return (
        f"**{_paired(c)}**"
        if d and d["ci"] is not None and abs(d["mean"]) > d["ci"]
        else _paired(c)
    )


def tables(record: Mapping[str, Any]) -> str:
    acc_rows, diff_rows = [], []
    for entry in record["settings"]:
        results = {r["method"]: r for r in entry.get("results", [])}
        if not results:
            continue
        name = entry["setting"]
        row = [name, _pct(results[FROZEN]["summary"]["accuracy"]) if FROZEN in results else "-"]
        for suffix in (NOPOLICY_SUFFIX, ""):
            for learner in LEARNERS:
                r = results.get(learner + suffix)
                row.append(_pct(r["summary"]["accuracy"]) if r else "not run")
        acc_rows.append(row)
        for suffix, how in ((NOPOLICY_SUFFIX, "prototypes"), ("", "policy")):
            if HYBRID + suffix not in results:
                continue
            hyb = HYBRID + suffix
            diff_rows.append(
                [
                    name,
                    how,
                    _cell(results, hyb, "general_smlmt" + suffix),
                    _cell(results, hyb, "general_labelled" + suffix),
                    *(_cell(results, learner + suffix, FROZEN) for learner in LEARNERS),
                    *(
                        _cell(results, learner, learner + NOPOLICY_SUFFIX) if not suffix else ""
                        for learner in LEARNERS
                    ),
                ]
            )
    acc_header = ["setting", "frozen prototypes",
                  *(f"{v} (prototypes)" for v in LEARNERS.values()),
                  *(f"{v} (policy)" for v in LEARNERS.values())]  # fmt: skip
    diff_header = ["setting", "adaptation", "hybrid − SMLMT", "hybrid − labelled",
                   *(f"{v} − frozen prototypes" for v in LEARNERS.values()),
                   *(f"{v}: policy − prototypes" for v in LEARNERS.values())]  # fmt: skip
    return (
        "## Ablation: accuracy per learner (mean ± 95% CI half-width, %)\n\n"
        + markdown_table(acc_header, acc_rows)
        + "\n\n## Ablation: paired differences (per episode, points, 95% t-interval)\n\n"
        + markdown_table(diff_header, diff_rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="merged bench_accuracy.py results JSON")
    p.add_argument("--append", help="also append the tables to this Markdown file")
    args = p.parse_args(argv)
    text = tables(json.loads(Path(args.results).read_text(encoding="utf-8")))
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
