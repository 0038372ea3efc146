"""Choose the adaptation policy's settings on validation tasks, never on the held-out test corpora.

The general learner's held-out evaluation (`bench_accuracy.py`) scores BBC News, SNIPS, the
tweet domain ``coachella`` and two BIG-bench tasks. Settings of `metanlp.meta.policy.AdaptPolicy`
are compared here instead, on tasks from none of them: tweet sentiment of the ``airlines``
domain, BIG-bench ``language_identification`` (short texts) and BIG-bench
``multiemo/all_text_en`` (reviews, truncated at 128 tokens like BBC's articles). Every candidate
adapts the same learner on the same episodes (seed 777), candidates alternate within each
episode, and the results are paired against the first candidate.

The learner is the un-meta-trained MiniLM (``--learner base``, ProtoNet) by default: the general
learner was meta-trained on these corpora, so they are not held out for it, and its numbers here
would flatter the candidates that keep its own adaptation.

```bash
python benchmarks/policy_validation.py --settings airlines_3w1s langid_5w1s multiemo_4w1s \
    --candidates earlier k1-body k1-body-6 k1-top4 k1-top4-2e-4 --episodes 12 --out /tmp/policy_val
```
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy_setup import EARLIER_POLICY
from benchmarks.common import (
    markdown_table,
    provenance,
    provenance_markdown,
    write_grouped_bars,
    write_json,
    write_markdown,
)

VALIDATION_SEED = 777
VALIDATION: dict[str, tuple[str, dict[str, Any], int]] = {
    # name: (corpus, sampler options, max_length); none of them is a held-out test corpus.
    **{
        f"airlines_3w{k}s": (
            "tweets",
            {"n_way": None, "k_shot": k, "q_query": 8, "group_by": "domain", "groups": ["airlines"]},
            64,
        )
        for k in (1, 5)
    },
    **{
        f"langid_5w{k}s": ("bigbench/language_identification", {"n_way": 5, "k_shot": k, "q_query": 5, "drop_small": True}, 64)
        for k in (1, 5)
    },
    **{
        f"multiemo_4w{k}s": ("bigbench/multiemo/all_text_en", {"n_way": 4, "k_shot": k, "q_query": 5}, 128)
        for k in (1, 5)
    },
}  # fmt: skip

EARLIER = EARLIER_POLICY
CANDIDATES: dict[str, dict[str, Any]] = {
    # Every candidate spells out what it changes over EARLIER (the defaults before 2026-12-02;
    # "default" is today's), so a name means the same policy whatever the defaults become. The
    # k1-* candidates change only the fallback, which is what runs at one example per class.
    "earlier": EARLIER,
    "k1-body": {**EARLIER, "fallback_params": "body"},
    "k1-body-6": {**EARLIER, "fallback_params": "body", "fallback_steps": 6, "fallback_lr": 1e-4},
    "k1-top4": {**EARLIER, "fallback_params": "top", "fallback_top_layers": 4},
    "k1-top4-2e-4": {**EARLIER, "fallback_params": "top", "fallback_top_layers": 4, "fallback_lr": 2e-4},
    "k1-top4-6": {**EARLIER, "fallback_params": "top", "fallback_top_layers": 4, "fallback_steps": 6,
                  "fallback_lr": 1e-4},
    "cv-fast": {**EARLIER, "steps": (0, 4, 8), "lrs": (5e-4,)},
    "default": {},
}  # fmt: skip


def candidate_policy(name: str) -> Any:
    from metanlp.meta.policy import AdaptPolicy

    return AdaptPolicy(**CANDIDATES[name])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--settings",
        nargs="+",
        default=["airlines_3w1s", "langid_5w1s", "multiemo_4w1s"],
        choices=sorted(VALIDATION),
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        default=["earlier", "k1-body-6", "k1-top4-6"],
        choices=sorted(CANDIDATES),
        help="the first is the reference of the paired differences",
    )
    p.add_argument(
        "--learner",
        default="base",
        help="'base' (MiniLM, ProtoNet, no meta-training) or a saved learner folder",
    )
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="/tmp/policy_validation")
    p.add_argument("--stem", default="policy_validation")
    return p.parse_args(argv)  # fmt: skip


def validation_episodes(name: str, tokenizer: Any, n: int, data_dir: str | None) -> list:
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler

    corpus, options, max_length = VALIDATION[name]
    sampler = ClassificationSampler(
        load_corpus(corpus, data_dir),
        name=corpus.split("/")[-1],
        seed=VALIDATION_SEED,
        tokenizer=tokenizer,
        max_length=max_length,
        **options,
    )
    return [sampler.episode(i) for i in range(n)]


def main(argv: list[str] | None = None) -> None:
    import torch

    from metanlp.api import MetaLearner
    from metanlp.evaluation import evaluate, paired_difference

    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.learner == "base":
        learner = MetaLearner.from_pretrained(
            algorithm="protonet", adapt="all", algorithm_config={}
        )
    else:
        learner = MetaLearner.from_pretrained(args.learner)
    methods = {
        name: MetaLearner(
            learner.algorithm,
            replace(learner.config, policy=candidate_policy(name).to_dict()),
        )
        for name in args.candidates
    }
    record: dict[str, Any] = {"provenance": provenance(argv), "args": vars(args), "settings": {}}
    rows, diffs, panels_acc, panels_time = [], [], {}, {}
    reference = args.candidates[0]
    for setting in args.settings:
        episodes = validation_episodes(setting, learner.tokenizer, args.episodes, args.data_dir)
        results = evaluate(methods, episodes, episode_set=setting, seed=VALIDATION_SEED)
        record["settings"][setting] = results
        by_name = {r["method"]: r for r in results}
        panels_acc[setting], panels_time[setting] = {}, {}
        for name, r in by_name.items():
            acc = r["summary"]["accuracy"]
            per_episode = r["seconds"] / len(episodes)
            rows.append([setting, name, f"{100 * acc['mean']:.1f} ± {100 * acc['ci']:.1f}",
                         round(per_episode, 2), candidate_policy(name).to_dict()])  # fmt: skip
            panels_acc[setting][name] = 100 * acc["mean"]
            panels_time[setting][name] = per_episode
            if name != reference:
                d = paired_difference(r, by_name[reference], "accuracy")
                speed = by_name[reference]["seconds"] / max(r["seconds"], 1e-9)
                diffs.append([setting, f"{name} − {reference}",
                              f"{100 * d['mean']:+.1f} ± {100 * d['ci']:.1f}", d["n"], round(speed, 2)])  # fmt: skip
    out = Path(args.out)
    write_json(out / f"{args.stem}.json", record)
    write_markdown(
        out / f"{args.stem}.md",
        "Adaptation-policy candidates on validation tasks (no held-out test corpus)",
        [
            provenance_markdown(record["provenance"]),
            f"Learner: `{args.learner}`; {args.episodes} episodes per setting, seed "
            f"{VALIDATION_SEED}; one thread; mean ± 95% CI half-width, in %.",
            markdown_table(["setting", "candidate", "accuracy", "s / episode", "AdaptPolicy fields"], rows),
            "Paired per episode against the reference, and its speed-up (reference time / candidate time):",
            markdown_table(["setting", "difference", "accuracy (points)", "episodes", "speed-up"], diffs),
        ],
    )  # fmt: skip
    write_grouped_bars(
        out / f"{args.stem}.png",
        [("accuracy (%)", panels_acc), ("seconds per episode", panels_time)],
        "Adaptation-policy candidates on validation tasks",
    )
    print((out / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
