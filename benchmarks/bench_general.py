"""The general learner (or `MetaLearner.from_pretrained()`) against SetFit, plain fine-tuning and
frozen logistic regression on the held-out corpora (issue 27).

Every method uses the same MiniLM body and the same fixed episodes of the held-out settings
(`metanlp.general.HELD_OUT_SETTINGS`, plus BBC 5-way 1-shot); the table gives each method's
accuracy, the paired per-episode difference of the learner minus each baseline with its 95 %
t-interval (bold where it excludes 0), the policy's choices, and the seconds per episode
(adaptation and prediction of the query, one process, the same run).

    python benchmarks/bench_general.py --episodes 5 --out benchmarks/results          # from_pretrained()
    python benchmarks/bench_general.py --learner outputs/general_learner/meta/learner \\
        --methods logreg finetune --stem general_learner
    .venv-bench/bin/python benchmarks/bench_general.py --learner ... --methods logreg finetune setfit \\
        --setfit-episodes 10
    python benchmarks/bench_general.py --merge a.json b.json --stem general_learner  # runs split by setting
    python benchmarks/bench_general.py --learner A --against B --no-policy --methods --stem ab  # two builds

Whole-test-split settings (BANKING77: all 3,080 test texts per draw) are slow on a CPU; they run
only when named in ``--settings``. SetFit (``--methods setfit``, benchmark venv only) runs on the
first ``--setfit-episodes`` episodes of each setting; its paired differences use those.
"""

from __future__ import annotations

import argparse
import json
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

BASELINES = {
    "logreg": "frozen logistic regression",
    "finetune": "fine-tune",
    "setfit": "SetFit",
    "default": "from_pretrained()",
}
"""``--methods`` -> the method's name in the results (``default``: `from_pretrained()` beside a
``--learner``)."""


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
        decision = self.learner.last_decision
        if decision is None:  # no policy (--no-policy): the algorithm's own adaptation
            self.choices.append("no policy")
            return logits
        base = "base " if decision.encoder == "base" else ""
        self.choices.append(base + decision.choice)
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


def learner_name(args: argparse.Namespace) -> str:
    return "general learner" if args.learner else "from_pretrained()"


def run_setting(name: str, setting: Any, args: argparse.Namespace) -> dict[str, Any]:
    from metanlp.api import MetaLearner
    from metanlp.baselines import FineTuneBaseline, FrozenLogisticRegression
    from metanlp.evaluation import evaluate, paired_difference
    from metanlp.general import held_out_sampler

    base = MetaLearner.from_pretrained(max_length=args.max_length, device="cpu")
    # A saved learner keeps its own max_length (the general learner's: 128, the default here).
    learner = MetaLearner.from_pretrained(args.learner, device="cpu") if args.learner else base
    sampler = held_out_sampler(
        setting, args.data, seed=args.seed, tokenizer=learner.tokenizer, max_length=args.max_length
    )
    n = min(args.episodes, setting.episodes)
    episodes = [sampler.episode(i) for i in range(n)]
    main = learner_name(args)
    recorded = {main: Recorded(learner)}
    if "default" in args.methods and args.learner:
        recorded[BASELINES["default"]] = Recorded(base)
    for path in args.against:
        recorded[f"learner {path}"] = Recorded(MetaLearner.from_pretrained(path, device="cpu"))
    if args.no_policy:  # the recipe's quick test: each encoder with its own adaptation only
        for method in recorded.values():
            method.learner.config.policy = None
    timed = {}
    if "logreg" in args.methods:
        timed[BASELINES["logreg"]] = Timed(FrozenLogisticRegression(base.model))
    if "finetune" in args.methods:
        timed[BASELINES["finetune"]] = Timed(FineTuneBaseline(base.model))
    methods = {**recorded, **timed}
    results = evaluate(methods, episodes, episode_set=name, seed=args.seed, progress=False)
    if "setfit" in args.methods and args.setfit_episodes > 0:
        from benchmarks.peers.setfit_runner import SetFitMethod

        setfit = Timed(SetFitMethod(max_length=args.max_length))
        sub = episodes[: args.setfit_episodes]
        results += evaluate({BASELINES["setfit"]: setfit}, sub, episode_set=name, seed=args.seed,
                            progress=False)  # fmt: skip
        timed[BASELINES["setfit"]] = setfit
    by_name = {r["method"]: r for r in results}
    diffs = {
        other: paired_difference(by_name[main], by_name[other], "accuracy")
        for other in by_name
        if other != main
    }
    seconds = {k: sum(m.seconds) / len(m.seconds) for k, m in {**recorded, **timed}.items()}
    return {
        "setting": setting.to_dict(),
        "episodes": n,
        "learner": args.learner,
        "results": results,
        "paired_accuracy_difference": diffs,
        "choices": {k: m.choices for k, m in recorded.items()},
        "seconds_per_episode": seconds,
    }


def _cell(d: dict[str, float] | None) -> str:
    if d is None:
        return "not run"
    bold = "**" if abs(d["mean"]) > d["ci"] else ""
    return f"{bold}{100 * d['mean']:+.1f} ± {100 * d['ci']:.1f}{bold} ({d['n']})"


def table(records: dict[str, dict[str, Any]]) -> str:
    main = next(iter(records.values()))["results"][0]["method"]
    others = list(dict.fromkeys(
        r["method"] for rec in records.values() for r in rec["results"][1:]
    ))  # fmt: skip
    rows = []
    for name, rec in records.items():
        by_name = {r["method"]: r for r in rec["results"]}
        acc = by_name[main]["summary"]["accuracy"]
        choices = ", ".join(f"{c} {k}" for c, k in Counter(rec["choices"][main]).most_common())
        secs = rec["seconds_per_episode"]
        ratio = f"1/{secs['SetFit'] / secs[main]:.1f}" if "SetFit" in secs else "not run"
        row = [name, rec["episodes"], f"{100 * acc['mean']:.1f} ± {100 * acc['ci']:.1f}"]
        for other in others:
            row.append(_cell(rec["paired_accuracy_difference"].get(other)))
        row += [choices, f"{secs[main]:.1f}", ratio]
        rows.append(row)
    header = ["setting", "episodes", main, *(f"− {o}" for o in others),
              "policy's choices", "s / episode", "time / SetFit's"]  # fmt: skip
    return markdown_table(header, rows) + (
        "\n\nMean ± 95 % t-interval half-width, in %; each difference is the learner minus the "
        "method, paired per episode (in brackets: the episodes both were scored on); bold: the "
        "interval excludes 0."
    )


def write(out: Path, stem: str, prov: Any, records: dict[str, dict[str, Any]]) -> None:
    main = next(iter(records.values()))["results"][0]["method"]
    write_json(out / f"{stem}.json", {"provenance": prov, "settings": records})
    write_markdown(
        out / f"{stem}.md",
        f"{main} against SetFit, fine-tuning and frozen logistic regression, held-out corpora",
        [provenance_markdown(prov), __doc__.split("\n\n")[1], table(records)],
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="METANLP_DATA_DIR (default: ./data)")
    p.add_argument("--settings", nargs="+", default=list(EPISODIC), help=f"from {list(settings())}")
    p.add_argument("--learner", default=None,
                   help="a saved learner (default: from_pretrained(), the plain encoder)")  # fmt: skip
    p.add_argument("--methods", nargs="*", default=["logreg"], choices=list(BASELINES),
                   help="baselines to score beside the learner")  # fmt: skip
    p.add_argument("--against", nargs="+", default=[], metavar="LEARNER",
                   help="other saved learners scored on the same episodes, e.g. one built another "
                        "way (issue 31: bf16, 2 processes)")  # fmt: skip
    p.add_argument("--no-policy", action="store_true",
                   help="learners adapt without their policy (prototypes for ProtoNet: the "
                        "recipe's quick test, which compares encoders cheaply)")  # fmt: skip
    p.add_argument("--episodes", type=int, default=5, help="per setting (at most the setting's)")
    p.add_argument("--setfit-episodes", type=int, default=5, help="SetFit's: a prefix of them")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--stem", default="general_default")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only write the table of these results files (runs split by setting)")  # fmt: skip
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.merge:
        records, provs = {}, []
        for path in args.merge:
            data = json.loads(Path(path).read_text())
            provs.append(data["provenance"])
            records.update(data["settings"])
        prov = {**provs[0], "merged_from": [str(x) for x in args.merge], "runs": provs}
        write(out, args.stem, prov, records)
        print(f"[general] wrote {out / args.stem}.json and .md", flush=True)
        return
    known = settings()
    unknown = sorted(set(args.settings) - set(known))
    if unknown:
        p.error(f"unknown setting(s) {unknown}; choose from {list(known)}")
    if args.episodes < 2:
        p.error("--episodes must be >= 2 (an interval needs two).")
    if "setfit" in args.methods:
        import importlib.util

        if importlib.util.find_spec("setfit") is None:
            p.error("--methods setfit needs the benchmark venv (bash benchmarks/setup_env.sh).")
    if args.data is None:
        import os

        args.data = os.environ.get("METANLP_DATA_DIR", "data")
    prov = provenance(argv)
    records: dict[str, dict[str, Any]] = {}
    for name in args.settings:
        print(f"[general] {name}: {min(args.episodes, known[name].episodes)} episodes", flush=True)
        records[name] = run_setting(name, known[name], args)
        for other, d in records[name]["paired_accuracy_difference"].items():
            if d is not None:
                print(f"[general] {name}: − {other} {100 * d['mean']:+.1f} ± {100 * d['ci']:.1f}",
                      flush=True)  # fmt: skip
        write(out, args.stem, prov, records)
    print(f"[general] wrote {out / args.stem}.json and .md", flush=True)


if __name__ == "__main__":
    main()
