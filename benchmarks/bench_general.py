"""What `MetaLearner.from_pretrained()` gives (its default policy) against frozen logistic regression.

Issue 27 item 4: the default path must never be below the simplest baseline. Both methods use
the same MiniLM body and the same fixed episodes of the held-out settings
(`metanlp.general.HELD_OUT_SETTINGS`, plus BBC 5-way 1-shot); the table gives each method's
accuracy and the paired per-episode difference with its 95 % t-interval ("below" = the
interval excludes 0 under it), the policy's choices, and the seconds per episode.

    python benchmarks/bench_general.py --episodes 5 --out benchmarks/results
    python benchmarks/bench_general.py --settings bbc_5w5s coachella_3w8s --episodes 3

Whole-test-split settings (BANKING77) score every test text per draw and are slow on a CPU;
they run only when named in ``--settings``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `metanlp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    markdown_table,
    provenance,
    provenance_markdown,
    write_json,
    write_markdown,
)


def settings() -> dict[str, Any]:
    """Short names -> `HeldOutSetting`: the held-out settings and BBC 5-way 1-shot."""
    from metanlp.general import HELD_OUT_SETTINGS, HeldOutSetting

    short = {
        "BANKING77 77-way 5-shot (whole test split)": "banking77_77w5s",
        "BANKING77 77-way 10-shot (whole test split)": "banking77_77w10s",
        "StackOverflow tags 5-way 1-shot": "stackoverflow_5w1s",
        "StackOverflow tags 5-way 5-shot": "stackoverflow_5w5s",
        "BBC News 5-way 5-shot": "bbc_5w5s",
        "coachella tweets 3-way 8-shot": "coachella_3w8s",
    }
    out = {short.get(s.title, s.title): s for s in HELD_OUT_SETTINGS}
    out["bbc_5w1s"] = HeldOutSetting("BBC News 5-way 1-shot", "bbc_news", 5, 1, 5, 20)
    return out


EPISODIC = ("bbc_5w1s", "bbc_5w5s", "coachella_3w8s", "stackoverflow_5w1s", "stackoverflow_5w5s")


class Recorded:
    """A learner scored by `evaluate` that keeps the policy's choice and time per episode."""

    def __init__(self, learner: Any) -> None:
        self.learner, self.choices, self.seconds = learner, [], []

    def query_logits(self, episode: Any) -> Any:
        began = time.perf_counter()
        logits = self.learner.query_logits(episode)
        self.seconds.append(time.perf_counter() - began)
        self.choices.append(self.learner.last_decision.choice)
        return logits


class Timed:
    """A baseline scored by `evaluate`, timed per episode."""

    def __init__(self, method: Any) -> None:
        self.method, self.seconds = method, []

    def query_logits(self, episode: Any) -> Any:
        began = time.perf_counter()
        logits = self.method.query_logits(episode)
        self.seconds.append(time.perf_counter() - began)
        return logits


def run_setting(name: str, setting: Any, args: argparse.Namespace) -> dict[str, Any]:
    from metanlp.api import MetaLearner
    from metanlp.baselines import FrozenLogisticRegression
    from metanlp.evaluation import evaluate, paired_difference
    from metanlp.general import held_out_sampler

    learner = MetaLearner.from_pretrained(max_length=args.max_length, device="cpu")
    sampler = held_out_sampler(
        setting, args.data, seed=args.seed, tokenizer=learner.tokenizer, max_length=args.max_length
    )
    n = min(args.episodes, setting.episodes)
    episodes = [sampler.episode(i) for i in range(n)]
    default, logreg = Recorded(learner), Timed(FrozenLogisticRegression(learner.model))
    results = evaluate(
        {"from_pretrained()": default, "frozen logistic regression": logreg},
        episodes,
        episode_set=name,
        seed=args.seed,
        progress=False,
    )
    diff = paired_difference(results[0], results[1], "accuracy")
    return {
        "setting": setting.to_dict(),
        "episodes": n,
        "results": results,
        "paired_accuracy_difference": diff,
        "choices": default.choices,
        "seconds_per_episode": {
            "from_pretrained()": sum(default.seconds) / n,
            "frozen logistic regression": sum(logreg.seconds) / n,
        },
    }


def table(records: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, r in records.items():
        acc = [res["summary"]["accuracy"] for res in r["results"]]
        d = r["paired_accuracy_difference"]
        below = d["mean"] + d["ci"] < 0
        choices = ", ".join(f"{c} {k}" for c, k in Counter(r["choices"]).most_common())
        secs = r["seconds_per_episode"]
        rows.append([
            name,
            r["episodes"],
            f"{100 * acc[0]['mean']:.1f} ± {100 * acc[0]['ci']:.1f}",
            f"{100 * acc[1]['mean']:.1f} ± {100 * acc[1]['ci']:.1f}",
            f"{'**' if below else ''}{100 * d['mean']:+.1f} ± {100 * d['ci']:.1f}{'**' if below else ''}",
            choices,
            f"{secs['from_pretrained()']:.1f} / {secs['frozen logistic regression']:.1f}",
        ])  # fmt: skip
    header = ["setting", "episodes", "from_pretrained()", "frozen LR", "paired diff",
              "policy's choices", "s / episode (ours / LR)"]  # fmt: skip
    return markdown_table(header, rows) + (
        "\n\nMean ± 95 % t-interval half-width, in %; bold: the paired interval excludes 0 "
        "below (the default path below the baseline)."
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="METANLP_DATA_DIR (default: ./data)")
    p.add_argument("--settings", nargs="+", default=list(EPISODIC), help=f"from {list(settings())}")
    p.add_argument("--episodes", type=int, default=5, help="per setting (at most the setting's)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--stem", default="general_default")
    args = p.parse_args(argv)
    known = settings()
    unknown = sorted(set(args.settings) - set(known))
    if unknown:
        p.error(f"unknown setting(s) {unknown}; choose from {list(known)}")
    if args.episodes < 2:
        p.error("--episodes must be >= 2 (an interval needs two).")
    if args.data is None:
        import os

        args.data = os.environ.get("METANLP_DATA_DIR", "data")
    out = Path(args.out)
    prov = provenance(argv)
    records: dict[str, dict[str, Any]] = {}
    for name in args.settings:
        print(f"[general] {name}: {min(args.episodes, known[name].episodes)} episodes", flush=True)
        records[name] = run_setting(name, known[name], args)
        d = records[name]["paired_accuracy_difference"]
        print(f"[general] {name}: paired {100 * d['mean']:+.1f} ± {100 * d['ci']:.1f}", flush=True)
        write_json(out / f"{args.stem}.json", {"provenance": prov, "settings": records})
        write_markdown(
            out / f"{args.stem}.md",
            "from_pretrained() (default policy) against frozen logistic regression",
            [provenance_markdown(prov), __doc__.split("\n\n")[1], table(records)],
        )
    print(f"[general] wrote {out / args.stem}.json and .md", flush=True)


if __name__ == "__main__":
    main()
