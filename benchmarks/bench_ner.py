"""Few-shot NER on WNUT-16's held-out types: the decomposed learner against ProtoNet, NNShot,
plain fine-tuning and the NER recipe's Proto-MAML, on the same fixed episodes.

    python benchmarks/bench_ner.py --learner protomaml=outputs/ner_wnut16/meta/learner
    python benchmarks/bench_ner.py --quick                      # smoke run, a few minutes

Types: the split of `benchmarks.accuracy_setup` (six frequent types meta-train, four rare ones
are only tested); relaxed Few-NERD episodes, 3-way 1~2-shot (the accuracy benchmark's own
episode file), 3-way 5~10-shot and (``--ways 4``) 4-way 1~2-shot. Meta-trained methods see
3-way 1~2-shot episodes of the frequent types for ``--steps`` meta-steps; the chosen decomposed
learner (and a ProtoNet for comparison) sees episodes holding all six (`ALL_TYPES`). Scores per
episode: entity micro-F1 (seqeval, strict IOB2), span-detection F1 (every type mapped to one)
and typing accuracy (exactly detected gold mentions given the right type), plus the decomposed
learner's typing of every gold span, with 95% intervals and paired differences against
`CHOSEN` (typing by the types' names and detection settings picked on validation types by
`benchmarks.ner_validation`). Results: ``benchmarks/results/ner{,_quick}.*``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy_setup import (
    NER_TEST_TYPES,
    NER_TRAIN_TYPES,
    SETTINGS,
    load_setting_episodes,
)
from benchmarks.common import REPO_ROOT, provenance
from benchmarks.ner_report import span_scores, write_ner_results
from metanlp.corpora.wnut16 import TYPE_DESCRIPTIONS

TRAIN_SOURCE = {"dataset": "wnut16", "kind": "ner", "n_way": 3, "k_shot": 1, "q_query": 1,
                "types": NER_TRAIN_TYPES, "mode": "relaxed", "scheme": "io"}  # fmt: skip
POLISH = {**TRAIN_SOURCE, "dataset": "bigbench/polish_sequence_labeling", "weight": 1.0,
          "types": ["nam_adj", "nam_eve", "nam_fac", "nam_liv", "nam_loc", "nam_num", "nam_org",
                    "nam_oth", "nam_pro"]}  # fmt: skip
DECOMPOSED = {"inner_steps": 5, "inner_lr": 0.1, "typing_inner_steps": 3, "typing_inner_lr": 0.1,
              "temperature": 10.0, "entity_weight": 5.0}  # fmt: skip
VARIANTS = {  # decoding variants of the one decomposed learner (no retraining)
    "decomposed": {},
    "decomposed, Viterbi on posteriors": {"decoding": "viterbi_posterior"},
    "decomposed, constrained (no I after O)": {"decoding": "constrained"},
    "decomposed, argmax (no Viterbi)": {"decoding": "argmax"},
    "decomposed, O threshold 0.6": {"o_handling": "threshold", "o_threshold": 0.6},
    "decomposed, 4 O prototypes": {"o_handling": "prototypes", "o_prototypes": 4},
}
TYPER = {"typing": "finetune"}
NAMES = {"typing": "names", "type_descriptions": TYPE_DESCRIPTIONS}
C = {"decoding": "constrained"}


def typer(steps: int, lr: float = 5e-5, head_lr: float = 5e-3, **options: Any) -> dict[str, Any]:
    """A fine-tuned typer variant (``options``: more `FineTuneConfig` fields)."""
    return {**TYPER, "typing_finetune": {"steps": steps, "lr": lr, "head_lr": head_lr, **options}}


TYPER_VARIANTS: dict[str, dict[str, Any]] = {
    # round 1 (validation): which tensors, how far, the none class; default decoding
    "typer top2 10 steps": typer(10),
    "typer top2 10 steps, constrained": {**typer(10), **C},
    "typer head only 10 steps": typer(10, params="head"),
    "typer all 10 steps": typer(10, params="all"),
    "typer top2 20 steps lr 1e-4/1e-2": typer(20, 1e-4, 1e-2),
    "typer top2 10 steps + none": {**typer(10), "typing_none_class": True},
    # round 2: constrained decoding (round 1's better detection); all tensors, further
    "typer all 10 steps, constrained": {**typer(10, params="all"), **C},
    "typer all 20 steps lr 1e-4/1e-2, constrained": {**typer(20, 1e-4, 1e-2, params="all"), **C},
    "typer all 10 steps zero head, constrained": {
        **typer(10, params="all", head_start="zero"),
        **C,
    },
    "typer top2 40 steps lr 2e-4/2e-2, constrained": {**typer(40, 2e-4, 2e-2), **C},
    "typer all 10 steps + none, constrained": {
        **typer(10, params="all"),
        "typing_none_class": True,
        **C,
    },
    "decomposed, constrained, 20 detector steps": {**C, "eval_inner_steps": 20},
    "decomposed, constrained, 50 detector steps": {**C, "eval_inner_steps": 50},
    # round 3: a threshold on P(O) (DecomposedConfig.detection_bias)
    "decomposed, constrained, detection bias -1": {**C, "detection_bias": -1.0},
    "decomposed, constrained, detection bias +1": {**C, "detection_bias": 1.0},
    "decomposed, constrained, detection bias +2": {**C, "detection_bias": 2.0},
    # round 4: more typer settings, scored with typing of gold spans too (detection aside)
    "typer all 5 steps, constrained": {**typer(5, params="all"), **C},
    "typer all 10 steps lr 1e-4/1e-2, constrained": {**typer(10, 1e-4, 1e-2, params="all"), **C},
    "typer all 20 steps, constrained": {**typer(20, params="all"), **C},
    # round 5: combine the best typer with the best detection; one more rate
    "typer all 10 steps lr 2e-4/2e-2, constrained": {**typer(10, 2e-4, 2e-2, params="all"), **C},
    "typer all 10 steps lr 1e-4/1e-2, constrained, detection bias +1": {
        **typer(10, 1e-4, 1e-2, params="all"),
        **C,
        "detection_bias": 1.0,
    },
    "decomposed, constrained, detection bias +0.5": {**C, "detection_bias": 0.5},
    "decomposed, constrained, detection bias +1, 50 detector steps": {
        **C,
        "detection_bias": 1.0,
        "eval_inner_steps": 50,
    },
    # round 6: the typer with the detection settings of round 5
    "typer all 10 steps lr 1e-4/1e-2, constrained, detection bias +0.5": {
        **typer(10, 1e-4, 1e-2, params="all"),
        **C,
        "detection_bias": 0.5,
    },
    "typer all 10 steps lr 1e-4/1e-2, constrained, detection bias +1, 50 detector steps": {
        **typer(10, 1e-4, 1e-2, params="all"),
        **C,
        "detection_bias": 1.0,
        "eval_inner_steps": 50,
    },
    "typer all 10 steps lr 1e-4/1e-2, constrained, detection bias +0.5, 50 detector steps": {
        **typer(10, 1e-4, 1e-2, params="all"),
        **C,
        "detection_bias": 0.5,
        "eval_inner_steps": 50,
    },
    # round 7: typing by the types' names (name_typer), detection as chosen or near it
    **{
        f"names w{w}, {label}": {**NAMES, "names_support_weight": w, **C, **det}
        for w in (0.25, 0.0)
        for label, det in {
            "bias 0.5, 50 steps": {"detection_bias": 0.5, "eval_inner_steps": 50},
            "bias 1, 50 steps": {"detection_bias": 1.0, "eval_inner_steps": 50},
            "bias 0, 5 steps": {},
        }.items()
    },
    # round 8: touching detected spans typed once, whole (join_adjacent)
    **{
        f"names w{w}, bias 0.5, 50 steps, joined": {
            **NAMES,
            "names_support_weight": w,
            **C,
            "detection_bias": 0.5,
            "eval_inner_steps": 50,
            "join_adjacent": True,
        }
        for w in (0.25, 0.0)
    },
    "typer all 10 steps lr 1e-4/1e-2, constrained, detection bias +0.5, 50 detector steps, joined": {
        **typer(10, 1e-4, 1e-2, params="all"),
        **C,
        "detection_bias": 0.5,
        "eval_inner_steps": 50,
        "join_adjacent": True,
    },
}
"""The fine-tuned span typer's settings (and detector steps) tried on validation types
(`benchmarks.ner_validation`), in the order they were tried."""


CHOSEN_FROM = "names w0.25, bias 0.5, 50 steps, joined"
"""The validation variant chosen (rounds 7-8: best entity F1 over the 1~2-shot and 5~10-shot
validation settings together; see the NER log in ``benchmarks/README.md``)."""
CHOSEN_OPTIONS = dict(TYPER_VARIANTS[CHOSEN_FROM])
"""Its settings; the recipe uses the same."""
CHOSEN = {"decomposed + typing by names (chosen on validation)": CHOSEN_OPTIONS}
ALL_TYPES = {**TRAIN_SOURCE, "n_way": len(NER_TRAIN_TYPES)}
"""Meta-training episodes of the chosen learner: every training type in each episode (a type
left out of an episode is tagged O there, and teaches the detector to miss names; on validation,
2 of 3 types per episode cost 8 points of span F1 against 3 of 3)."""
EARLIER = {"typing": "finetune", "decoding": "constrained", "detection_bias": 0.5,
           "eval_inner_steps": 50}  # fmt: skip
"""The setting chosen before (round 6: the fine-tuned typer), kept as a row."""
ABLATIONS = {  # fixed with the choice, before any test run: which part of the change does what
    "chosen, meta-trained on 3-way episodes": CHOSEN_OPTIONS,
    "chosen, touching spans not joined": {**CHOSEN_OPTIONS, "join_adjacent": False},
    "chosen detection, fine-tuned typer": {**EARLIER, "join_adjacent": True},
    "chosen detection, prototype typing": {
        **CHOSEN_OPTIONS,
        "typing": "prototypes",
        "type_descriptions": None,
    },
}
ON_ALL_TYPES = {*CHOSEN, *ABLATIONS} - {"chosen, meta-trained on 3-way episodes"}
"""The methods scored on the learner meta-trained on `ALL_TYPES` episodes."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 episodes, 2 meta-steps")
    p.add_argument("--episodes", type=int, default=30, help="fixed test episodes per setting")
    p.add_argument("--steps", type=int, default=150, help="meta-steps of each trained learner")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="K of the settings")
    p.add_argument("--ways", type=int, default=3, choices=[3, 4],
                   help="entity types per episode (4: every test type)")  # fmt: skip
    p.add_argument("--learner", action="append", default=[], metavar="NAME=PATH",
                   help="a saved learner to score too, e.g. protomaml=outputs/ner_wnut16/meta/learner")  # fmt: skip
    p.add_argument("--cache", default=str(REPO_ROOT / "benchmarks" / ".cache" / "ner"),
                   help="where trained learners and episode files are kept")  # fmt: skip
    p.add_argument("--polish", action="store_true", help="also score a decomposed learner "
                   "meta-trained on WNUT-16 + Polish name types (bigbench extra)")  # fmt: skip
    p.add_argument("--only-decomposed", action="store_true",
                   help="score the decomposed variants (and --learner) only")  # fmt: skip
    p.add_argument("--reuse", help="an earlier ner.json on the same episodes: its methods not "
                   "scored in this run are copied in (paired by episode index)")  # fmt: skip
    p.add_argument("--no-finetune", action="store_true", help="leave out fine-tuning (slow)")
    p.add_argument("--only-variants", nargs="+", help="score only these decomposed methods")
    p.add_argument("--merge", nargs="+", metavar="NER_JSON",
                   help="only combine finished runs on the same episodes (first file wins)")  # fmt: skip
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    p.add_argument("--data", default=None, help="corpora folder (default: $METANLP_DATA_DIR)")
    args = p.parse_args(argv)
    if args.quick:
        args.episodes, args.steps = 2, 2
    return args


def train(
    name: str,
    algorithm: str,
    options: dict[str, Any],
    args: argparse.Namespace,
    sources: list[dict[str, Any]] | None = None,
):
    """A learner meta-trained on the frequent types, or ``sources`` (loaded when cached)."""
    from metanlp.api import MetaLearner
    from metanlp.training import MetaTrainer
    from metanlp.training.config import MetaTrainerConfig

    key = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    folder = Path(args.cache) / f"{name}-{args.steps}-{key}"
    if (folder / "learner").is_dir():
        return MetaLearner.from_pretrained(folder / "learner", device="cpu")
    config = MetaTrainerConfig.from_dict({
        "task": "token", "adapt": "top", "adapt_options": {"top_layers": 2},
        "algorithm": algorithm, "algorithm_config": options, "max_steps": args.steps,
        "meta_batch_size": 2, "optimizer": {"lr": 1e-4, "schedule": "cosine", "warmup_steps": 5},
        "data": {"train": sources or [TRAIN_SOURCE], "val": None, "max_length": 64, "data_dir": args.data},
        "output_dir": str(folder / "train"), "overwrite_output_dir": True,
        "report_to": [], "progress_bar": False,
        "save_every": None, "keep_best": False, "cpu": True, "seed": 0,
    })  # fmt: skip
    trainer = MetaTrainer(config)
    trainer.train()
    learner = MetaLearner.from_trainer(trainer)
    learner.save_pretrained(folder / "learner")
    return learner


def variant(learner: Any, **options: Any) -> Any:
    """The same learner (shared weights) decoding with other options."""
    out = copy.copy(learner)
    out.algorithm = copy.copy(learner.algorithm)
    out.algorithm.config = dataclasses.replace(learner.algorithm.config, **options)
    return out


class Recorder:
    """Keeps each episode's query logits, for the span and typing scores, and for a decomposed
    learner its typing accuracy on the gold query spans (typing alone, detection aside)."""

    def __init__(self, method: Any) -> None:
        self.method, self.logits, self.gold_typing = method, [], []

    def query_logits(self, episode: Any):
        logits = self.method.query_logits(episode)
        self.logits.append(logits.detach().float().cpu())
        algorithm = getattr(self.method, "algorithm", None)
        accuracy = float("nan")
        if hasattr(algorithm, "gold_span_types"):
            n = int(episode.num_labels)
            pred, gold = algorithm.gold_span_types(self.method.last_fast, episode.query, n)
            accuracy = sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)
        self.gold_typing.append(accuracy)
        return logits

    def score(self, result: dict[str, Any], episodes: list) -> None:
        """Add span-detection F1, typing accuracy and gold-span typing to ``result``'s rows."""
        from metanlp.episodes.tags import episode_word_tags

        for row, episode, logits, gold in zip(
            result["episodes"], episodes, self.logits, self.gold_typing, strict=True
        ):
            row.update(span_scores(episode_word_tags(episode, logits), episode.query_targets))
            row["gold_span_typing"] = gold


def episodes_for(k: int, tokenizer: Any, args: argparse.Namespace) -> tuple[str, list]:
    """The fixed test episodes of ``args.ways``-way K~2K-shot (seed 4000 + K at 3-way, 4100 + K
    at 4-way; 3-way 1~2-shot is the accuracy benchmark's own file)."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import NERSampler, load_episodes, save_episodes

    n = args.ways
    if k == 1 and n == 3:  # the accuracy benchmark's fixed file, so the figures compare with it
        return "wnut_ner_3w1s", load_setting_episodes(SETTINGS["wnut_ner_3w1s"], tokenizer,
                                                      args.episodes, args.data)  # fmt: skip
    wnut = load_corpus("wnut16", args.data)
    sampler = NERSampler(wnut, n_way=n, k_shot=k, q_query=k, types=NER_TEST_TYPES, mode="relaxed",
                         scheme="io", name="wnut16", seed=4000 + 100 * (n - 3) + k)  # fmt: skip
    path = Path(args.cache) / f"episodes_{n}w{k}s_{args.episodes}.json"
    if not path.is_file():
        save_episodes(path, sampler.specs(args.episodes), sampler, metadata={"max_length": 64})
    return f"wnut_ner_{n}w{k}s", load_episodes(path, {"wnut16": wnut}, tokenizer=tokenizer,
                                               max_length=64)  # fmt: skip


def merge(paths: list[str], out: Path, stem: str, lead: str | None = None) -> None:
    """Combine the methods of finished runs, setting by setting (episodes must be the same);
    ``lead``: the method to pair with every other (default: the first file's)."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    merged = {**records[0], "lead": lead or records[0].get("lead"), "merged_from": [{"file": p, "provenance": r["provenance"]}
                                            for p, r in zip(paths, records, strict=True)]}  # fmt: skip
    merged["settings"] = {}
    for record in records:
        for setting, results in record["settings"].items():
            have = merged["settings"].setdefault(setting, [])
            for r in results:
                if r["method"] in {h["method"] for h in have}:
                    continue
                if have and [e["index"] for e in r["episodes"]] != [
                    e["index"] for e in have[0]["episodes"]
                ]:
                    raise ValueError(f"{r['method']!r} was scored on other episodes of {setting}.")
                have.append(r)
    write_ner_results(merged, out, stem)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), "ner")
    from metanlp.api import MetaLearner
    from metanlp.baselines import FineTuneBaseline, NearestToken
    from metanlp.evaluation import evaluate

    prov = provenance(sys.argv if argv is None else ["benchmarks/bench_ner.py", *argv])
    decomposed = train("decomposed", "decomposed", dict(DECOMPOSED), args)
    all_types = train("decomposed-6way", "decomposed", dict(DECOMPOSED), args, [ALL_TYPES])
    plain = MetaLearner.from_pretrained(task="token", device="cpu")
    learner_of = lambda name: all_types if name in ON_ALL_TYPES else decomposed  # noqa: E731
    named = {**CHOSEN, **VARIANTS, **ABLATIONS,
             "decomposed + fine-tuned typer (chosen before)": EARLIER}  # fmt: skip
    methods: dict[str, Any] = {name: variant(learner_of(name), **o) for name, o in named.items()}
    if args.polish:
        both = [{**TRAIN_SOURCE, "weight": 2.0}, POLISH]
        methods["decomposed, WNUT-16 + Polish"] = train("decomposed-polish", "decomposed",
                                                        dict(DECOMPOSED), args, both)  # fmt: skip
    if args.only_variants is not None:  # validation variants too, when named
        methods.update({name: variant(decomposed, **o) for name, o in TYPER_VARIANTS.items()
                        if name in args.only_variants})  # fmt: skip
        methods = {k: v for k, v in methods.items() if k in args.only_variants}
    if not args.only_decomposed:
        protonet = train("protonet", "protonet", {}, args)
        methods.update({
            "ProtoNet (ProtoBERT)": protonet,
            "ProtoNet, meta-trained on all-type episodes": train("protonet-6way", "protonet", {},
                                                                 args, [ALL_TYPES]),
            "NNShot (ProtoNet encoder)": NearestToken(protonet.model),
            "NNShot (frozen MiniLM)": NearestToken(plain.model),
        })  # fmt: skip
        if not args.no_finetune:
            methods["fine-tune"] = FineTuneBaseline(plain.model)
    for spec in args.learner:
        name, _, path = spec.partition("=")
        methods[f"{name} (saved learner)"] = MetaLearner.from_pretrained(path, device="cpu")
    records: dict[str, Any] = {"provenance": prov, "steps": args.steps, "settings": {}}
    records["lead"] = next((name for name in CHOSEN if name in methods), None)
    earlier = json.loads(Path(args.reuse).read_text()) if args.reuse else {"settings": {}}
    if args.reuse:
        records["reused"] = {"file": args.reuse, "provenance": earlier["provenance"]}
    for k in args.shots:
        setting, episodes = episodes_for(k, plain.tokenizer, args)
        recorders = {name: Recorder(m) for name, m in methods.items()}
        results = evaluate(recorders, episodes, episode_set=setting, progress=False)
        for result in results:
            recorders[result["method"]].score(result, episodes)
        indices = [row["index"] for row in results[0]["episodes"]]
        for old in earlier["settings"].get(setting, []):
            if old["method"] not in methods:
                if [row["index"] for row in old["episodes"]] != indices:
                    raise ValueError(f"{args.reuse}: {old['method']!r} was scored on other "
                                     f"episodes of {setting}; rerun it here instead.")  # fmt: skip
                results.append({**old, "reused_from": args.reuse})
        records["settings"][setting] = results
        write_ner_results(records, Path(args.out), "ner_quick" if args.quick else "ner")
        print(json.dumps({r["method"]: round(100 * r["summary"]["f1"]["mean"], 1)
                          for r in results}))  # fmt: skip


if __name__ == "__main__":
    main()
