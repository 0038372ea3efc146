"""Validation for the NER benchmark's settings, on training-side types only.

    python benchmarks/ner_validation.py                       # 30 episodes, every variant
    python benchmarks/ner_validation.py --quick               # smoke run

The decomposed learner's test-time settings (decoding, the fine-tuned typer's steps, rates,
tensors and "none" class) are chosen here, never on the test episodes: a learner is meta-trained
exactly as in `benchmarks.bench_ner` but on three of the six training types (person, geo-loc,
other; the same number of meta-steps and episodes), and scored on 3-way 1~2-shot relaxed
episodes of the other three (company, facility, product; drawn with seed 5001). No test type
(musicartist, sportsteam, tvshow, movie) is seen. Results: ``benchmarks/results/ner_validation.*``
(the same tables as the benchmark: entity F1, span-detection F1, typing accuracy, paired
differences).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_ner import (
    CHOSEN_FROM,
    DECOMPOSED,
    TRAIN_SOURCE,
    TYPER_VARIANTS,
    Recorder,
    merge,
    train,
    variant,
)
from benchmarks.common import REPO_ROOT, provenance
from benchmarks.ner_report import write_ner_results

VAL_TRAIN_TYPES = ["person", "geo-loc", "other"]
VAL_TYPES = ["company", "facility", "product"]
VAL_SEED = 5001
BASE_VARIANTS = {
    "decomposed": {},
    "decomposed, constrained (no I after O)": {"decoding": "constrained"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 episodes, 2 meta-steps")
    p.add_argument("--episodes", type=int, default=30, help="validation episodes")
    p.add_argument("--steps", type=int, default=150, help="meta-steps of the validation learner")
    p.add_argument("--variants", nargs="+", help="score only these methods (default: all)")
    p.add_argument("--shots", type=int, default=1,
                   help="K: 3-way K~2K-shot episodes (1, or 5 for 5~10-shot; seed 5001 + K - 1)")  # fmt: skip
    p.add_argument("--protonet", action="store_true", help="also score ProtoNet (same split)")
    p.add_argument("--finetune", action="store_true", help="also score plain fine-tuning")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only combine finished validation runs (first file wins)")  # fmt: skip
    p.add_argument("--cache", default=str(REPO_ROOT / "benchmarks" / ".cache" / "ner"))
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument("--data", default=None, help="corpora folder (default: $METANLP_DATA_DIR)")
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.steps = 2, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), "ner_validation", lead=CHOSEN_FROM)
    from metanlp.api import MetaLearner
    from metanlp.baselines import FineTuneBaseline
    from metanlp.corpora import load_corpus
    from metanlp.episodes import NERSampler, load_episodes, save_episodes
    from metanlp.evaluation import evaluate

    prov = provenance(sys.argv if argv is None else ["benchmarks/ner_validation.py", *argv])
    source = {**TRAIN_SOURCE, "types": VAL_TRAIN_TYPES}
    learner = train("decomposed-val", "decomposed", dict(DECOMPOSED), args, [source])
    methods = {
        name: variant(learner, **o) for name, o in {**BASE_VARIANTS, **TYPER_VARIANTS}.items()
    }
    if args.variants:
        unknown = sorted(set(args.variants) - set(methods))
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; known: {sorted(methods)}")
        methods = {k: v for k, v in methods.items() if k in args.variants}
    if args.protonet:
        methods["ProtoNet (ProtoBERT)"] = train("protonet-val", "protonet", {}, args, [source])
    if args.finetune:
        plain = MetaLearner.from_pretrained(task="token", device="cpu")
        methods["fine-tune"] = FineTuneBaseline(plain.model)
    wnut = load_corpus("wnut16", args.data)
    k = args.shots
    sampler = NERSampler(wnut, n_way=3, k_shot=k, q_query=k, types=VAL_TYPES, mode="relaxed",
                         scheme="io", name="wnut16", seed=VAL_SEED + k - 1)  # fmt: skip
    setting = f"validation_3w{k}s"
    path = Path(args.cache) / f"{setting}_{args.episodes}.json"
    if not path.is_file():
        save_episodes(path, sampler.specs(args.episodes), sampler, metadata={"max_length": 64})
    episodes = load_episodes(path, {"wnut16": wnut}, tokenizer=learner.tokenizer, max_length=64)
    recorders = {name: Recorder(m) for name, m in methods.items()}
    results = evaluate(recorders, episodes, episode_set=setting, progress=False)
    for result in results:
        recorders[result["method"]].score(result, episodes)
    record = {"provenance": prov, "steps": args.steps, "settings": {setting: results},
              "lead": CHOSEN_FROM,
              "note": f"Validation: meta-trained on {', '.join(VAL_TRAIN_TYPES)}; episodes of "
                      f"{', '.join(VAL_TYPES)} (3-way {k}~{2 * k}-shot, relaxed, seed {VAL_SEED + k - 1})."}  # fmt: skip
    write_ner_results(
        record, Path(args.out), "ner_validation_quick" if args.quick else "ner_validation"
    )
    print(json.dumps({r["method"]: round(100 * r["summary"]["f1"]["mean"], 1) for r in results}))


if __name__ == "__main__":
    main()
