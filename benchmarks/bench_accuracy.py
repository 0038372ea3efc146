"""Accuracy on held-out few-shot tasks: metanlp's meta-learners vs SetFit and the baselines.

Every method starts from the same MiniLM body and is scored by `metanlp.evaluation.evaluate` on
the same fixed test episodes (see `benchmarks.accuracy_setup`), with 95% Student-t intervals.

    .venv-bench/bin/python benchmarks/bench_accuracy.py            # default size (2 CPU cores)
    .venv-bench/bin/python benchmarks/bench_accuracy.py --quick    # smoke run, a few minutes
    .venv-bench/bin/python benchmarks/bench_accuracy.py --full     # 600 episodes per setting (GPU)
    ... --settings bbc_5w5s tweets_3w8s --episodes 10 --setfit-episodes 3
    ... --merge a/accuracy.json b/accuracy.json   # combine runs that split methods/settings

SetFit is trained on each episode's support set and costs 40-220 s per episode on 2 CPU cores,
so it runs on the first ``--setfit-episodes`` episodes only (its CI is wider; the table says how
many episodes each number has). Without SetFit installed (outside ``.venv-bench``) the SetFit
rows are left out and the results file says so. Results go to
``benchmarks/results/accuracy{,_quick,_full}.{json,md,png}``, rewritten after every setting.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `metanlp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy_report import merge_records, write_results
from benchmarks.accuracy_setup import (
    EARLIER_POLICY,
    EARLIERPOLICY_SUFFIX,
    METANLP_METHODS,
    NOPOLICY_SUFFIX,
    SETTINGS,
    VARIANTS,
    learner_for,
    load_setting_episodes,
    variant_of,
)
from benchmarks.common import REPO_ROOT, provenance

logger = logging.getLogger("bench_accuracy")

BASELINES = ("finetune", "frozen_protos", "logreg")
SETFIT = "setfit"
SIZES: dict[str, dict[str, Any]] = {
    # episodes per setting, SetFit episodes per setting, meta-training steps per variant
    "quick": {"episodes": 2, "setfit_episodes": 1, "train_steps": 2,
              "settings": ["tweets_3w4s"]},
    # Sized for an idle 2-core CPU, about an hour: meta-training ~17 min (6 variants x 20
    # steps), metanlp + baselines ~25-60 s per episode, SetFit 40-220 s per episode.
    "default": {"episodes": 8, "setfit_episodes": 2, "train_steps": 20,
                "settings": ["bbc_5w1s", "bbc_5w5s", "tweets_3w4s", "tweets_3w16s",
                             "wnut_ner_3w1s"]},
    "full": {"episodes": 600, "setfit_episodes": 200, "train_steps": 300,
             "settings": list(SETTINGS)},
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke run (a few minutes on CPU)")
    size.add_argument("--full", action="store_true", help="600 episodes per setting (GPU)")
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), help="default: by size")
    p.add_argument(
        "--methods",
        nargs="+",
        help=f"default: {list(VARIANTS)} + baselines + setfit; VARIANT+ft adds test-time "
        "fine-tuning (--finetune-steps AdamW steps on every weight) to a variant",
    )
    p.add_argument("--episodes", type=int, help="test episodes per setting (default: by size)")
    p.add_argument("--setfit-episodes", type=int, help="SetFit's episodes (a prefix of them)")
    p.add_argument(
        "--first-episode",
        type=int,
        default=0,
        help="skip the episodes before this index (split a long run; --merge adds them up)",
    )
    p.add_argument("--train-steps", type=int, help="meta-training steps per variant")
    p.add_argument(
        "--finetune-steps", type=int, default=10, help="fine-tune baseline (and VARIANT+ft) steps"
    )
    p.add_argument(
        "--learner",
        action="append",
        default=[],
        metavar="VARIANT=PATH",
        help="use a saved learner (e.g. a recipe's) for a variant instead of training one; "
        "its task says which settings (text or NER) it serves",
    )
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--stem", help="results file name without extension (default: accuracy[_quick|_full])"
    )
    p.add_argument("--data-dir", default=None, help="corpora folder (default $METANLP_DATA_DIR)")
    p.add_argument(
        "--warmup",
        action="store_true",
        help="run every method once on the first episode, untimed and unscored, before timing "
        "(first calls pay one-off costs: kernel set-up, allocator growth)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="only combine results files of earlier runs (same episode files) into --out",
    )
    args = p.parse_args(argv)
    size = "quick" if args.quick else "full" if args.full else "default"
    for key, value in SIZES[size].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.size = size
    args.methods = args.methods or [*(v for v in VARIANTS if not VARIANTS[v].recipe), *BASELINES,
                                    SETFIT]  # fmt: skip
    allowed = [*METANLP_METHODS, *BASELINES, SETFIT]
    unknown = sorted(set(args.methods) - set(allowed))
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {allowed}")
    if args.episodes < 2 or args.setfit_episodes < 0:
        p.error("--episodes must be >= 2 (a CI needs two) and --setfit-episodes >= 0.")
    args.setfit_episodes = min(args.setfit_episodes, args.episodes)
    if not 0 <= args.first_episode < args.episodes:
        p.error(f"--first-episode {args.first_episode} must be in [0, --episodes).")
    return args


def setfit_status() -> str | None:
    """``None`` when SetFit can run here, else why not (it lives only in .venv-bench)."""
    import importlib.util

    if importlib.util.find_spec("setfit") is None:
        return (
            f"setfit is not installed in {sys.prefix}; run in .venv-bench (benchmarks/setup_env.sh)"
        )
    return None


def saved_learners(pairs: list[str]) -> dict[tuple[str, str], str]:
    """``(variant, family) -> folder``; the family comes from the learner's own task."""
    from metanlp.serialization import CONFIG_NAME

    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        config = Path(path) / CONFIG_NAME
        if not sep or name not in VARIANTS or not config.is_file():
            raise SystemExit(
                f"--learner {pair!r}: expected VARIANT=FOLDER with VARIANT in {list(VARIANTS)} "
                "and FOLDER a saved learner (MetaLearner.save_pretrained)."
            )
        family = "ner" if json.loads(config.read_text()).get("task") == "token" else "text"
        out[(name, family)] = path
    return out


def build_methods(args: argparse.Namespace, family: str, cache: dict) -> dict[str, Any]:
    """The methods of one family, meta-training (or loading) each variant once per run."""
    from metanlp.api import MetaLearner
    from metanlp.baselines import FineTuneBaseline, FrozenLogisticRegression, FrozenPrototypes
    from metanlp.meta.policy import AdaptPolicy
    from metanlp.models import FewShotModel

    given = saved_learners(args.learner)
    methods: dict[str, Any] = {}
    for name in args.methods:
        variant = variant_of(name)
        if variant and family in VARIANTS[variant].families:
            key = (variant, family)
            if key not in cache:
                start = time.perf_counter()
                if key in given:
                    cache[key] = MetaLearner.from_pretrained(given[key])
                elif VARIANTS[variant].recipe:
                    raise SystemExit(
                        f"{variant}: give the learner with --learner {variant}=FOLDER; build it "
                        f"with python {VARIANTS[variant].recipe} --data data."
                    )
                else:
                    cache[key] = learner_for(VARIANTS[variant], family, args.train_steps)
                args.train_seconds[f"{variant}/{family}"] = round(time.perf_counter() - start, 1)
            learner = cache[key]
            if name.endswith(NOPOLICY_SUFFIX):  # same weights, the policy turned off
                learner = MetaLearner(learner.algorithm, replace(learner.config, policy=None))
            elif name.endswith(EARLIERPOLICY_SUFFIX):  # same weights, the earlier policy
                earlier = AdaptPolicy(**EARLIER_POLICY).to_dict()
                learner = MetaLearner(learner.algorithm, replace(learner.config, policy=earlier))
            elif name != variant:  # same weights, fine-tuned after adapting
                ft = {"steps": args.finetune_steps}
                learner = MetaLearner(learner.algorithm, replace(learner.config, finetune=ft))
            methods[name] = learner
    if any(b in args.methods for b in BASELINES):
        task = "token" if family == "ner" else "sequence"
        if ("base", family) not in cache:
            cache[("base", family)] = FewShotModel.from_pretrained(task=task, pooling="mean")
        base = cache[("base", family)]
        if "finetune" in args.methods:
            methods["finetune"] = FineTuneBaseline(base, steps=args.finetune_steps)
        if "frozen_protos" in args.methods:
            methods["frozen_protos"] = FrozenPrototypes(base)
        if "logreg" in args.methods and family == "text":
            methods["logreg"] = FrozenLogisticRegression(base)
    return methods


def run_setting(args: argparse.Namespace, name: str, cache: dict) -> dict[str, Any]:
    from metanlp.evaluation import evaluate
    from metanlp.models import load_encoder

    setting = SETTINGS[name]
    if "tokenizer" not in cache:
        cache["tokenizer"] = load_encoder().tokenizer
    episodes = load_setting_episodes(setting, cache["tokenizer"], args.episodes, args.data_dir)
    episodes = episodes[args.first_episode :]
    methods = build_methods(args, setting.family, cache)
    print(f"[{name}] {len(methods)} methods on {len(episodes)} episodes: {list(methods)}")
    if args.warmup:
        for method in methods.values():
            method.query_logits(episodes[0])
    results = evaluate(methods, episodes, episode_set=name, progress=True) if methods else []
    entry: dict[str, Any] = {"setting": name, "title": setting.title, "results": results}
    want_setfit = SETFIT in args.methods and setting.kind == "classification"
    if want_setfit and args.setfit_episodes > 0 and args.setfit_problem is None:
        from benchmarks.peers.setfit_runner import SetFitMethod

        runner = SetFitMethod(max_length=setting.max_length)
        sub = episodes[: args.setfit_episodes]
        print(f"[{name}] setfit on the first {len(sub)} episodes")
        if args.warmup:
            runner.query_logits(sub[0])
        entry["results"] = results + evaluate({SETFIT: runner}, sub, episode_set=name)
        entry["setfit"] = runner.describe()
    elif want_setfit:
        entry["setfit_skipped"] = args.setfit_problem or "--setfit-episodes 0"
    return entry


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    stem = args.stem or {"quick": "accuracy_quick", "full": "accuracy_full"}.get(
        args.size, "accuracy"
    )
    if args.merge:
        records = [json.loads(Path(p).read_text()) for p in args.merge]
        paths = write_results(merge_records(records), Path(args.out), stem)
        print(f"merged {len(records)} results files -> {paths[1]}")
        return 0
    args.train_seconds = {}
    args.setfit_problem = setfit_status() if SETFIT in args.methods else None
    if args.setfit_problem:
        print(f"SetFit left out: {args.setfit_problem}")
    record: dict[str, Any] = {
        "provenance": provenance(),
        "size": args.size,
        "config": {k: getattr(args, k) for k in ("episodes", "setfit_episodes", "train_steps",
                                                  "finetune_steps", "methods", "settings",
                                                  "learner")},
        "variants": {k: vars(v) for k, v in VARIANTS.items()},
        "train_seconds": args.train_seconds,
        "settings": [],
    }  # fmt: skip
    cache: dict = {}
    for name in args.settings:
        if SETTINGS[name].extra:
            from metanlp.corpora import CorpusError, load_corpus

            try:
                load_corpus(SETTINGS[name].corpus, args.data_dir)
            except CorpusError as err:
                print(f"[{name}] skipped: needs the {SETTINGS[name].extra} extra ({err})")
                record["settings"].append({"setting": name, "skipped": str(err)})
                continue
        start = time.perf_counter()
        entry = run_setting(args, name, cache)
        entry["seconds"] = round(time.perf_counter() - start, 1)
        record["settings"].append(entry)
        paths = write_results(record, Path(args.out), stem)  # after every setting: partial is kept
        print(f"[{name}] done in {entry['seconds']} s -> {paths[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
