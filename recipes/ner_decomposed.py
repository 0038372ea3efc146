"""Decomposed few-shot NER on WNUT-16: detect entity spans of any type, then type them.

    python recipes/ner_decomposed.py --data data              # CPU default, minutes on one core
    python recipes/ner_decomposed.py --data data --smoke      # CI size, seconds
    python recipes/ner_decomposed.py --data data --polish     # add Polish names (bigbench extra)
    python recipes/ner_decomposed.py --data data --typing prototypes   # Proto-MAML span typing
    python recipes/ner_decomposed.py --data data --typing finetune     # the fine-tuned typer

The learner (`metanlp.meta.decomposed`, Ma et al. 2022): a B/I/O "any entity" detector
meta-learned with MAML (its head adapts on each support set), decoded by a Viterbi pass with
transition scores counted from the training episodes, and span typing by Proto-MAML over
mean-of-words span prototypes with a learned temperature. At test time (``--typing names``,
the default) the spans are typed by the types' names in the pretrained encoder's sentence space,
nudged by the support spans (`metanlp.meta.name_typer`), touching spans joined, the detector
adapted 50 steps with a small push toward entities: the settings chosen on validation types
(``benchmarks/bench_ner.py``'s ``CHOSEN_OPTIONS``); ``--typing finetune`` fine-tunes a typer on
the support's gold spans instead (`metanlp.meta.span_typer`). Meta-training: 1~2-shot relaxed
episodes holding all six frequent WNUT-16 types at once (a type left out of an episode would be
tagged O there; ``--polish`` adds 3-way episodes of the Polish name types as a second source). Test: 3-way 1~2-shot, 3-way 5~10-shot and 4-way 1~2-shot episodes of the
four rare types, the split of ``benchmarks/accuracy_setup.py``; entity micro-F1 (seqeval,
strict IOB2) against the same start without meta-training, frozen prototypes and NNShot.
"""

from __future__ import annotations

import time

from common import (
    Size,
    meta_train,
    methods_for,
    parse_args,
    require_optional_corpus,
    score_setting,
    trainer_config,
)
from report import write_report

from metanlp.corpora.wnut16 import TYPE_DESCRIPTIONS

TRAIN_TYPES = ["person", "geo-loc", "other", "company", "facility", "product"]
TEST_TYPES = ["musicartist", "sportsteam", "tvshow", "movie"]
POLISH = "bigbench/polish_sequence_labeling"
POLISH_NAMES = ["nam_adj", "nam_eve", "nam_fac", "nam_liv", "nam_loc", "nam_num", "nam_org",
                "nam_oth", "nam_pro"]  # fmt: skip
SETTINGS = {"3-way 1~2-shot": (3, 1), "3-way 5~10-shot": (3, 5), "4-way 1~2-shot": (4, 1)}
ALGORITHM = {"inner_steps": 5, "inner_lr": 0.1, "typing_inner_steps": 3, "typing_inner_lr": 0.1,
             "temperature": 10.0, "entity_weight": 5.0, "first_order": False}  # fmt: skip
# Test-time settings chosen on validation types (benchmarks/bench_ner.py's CHOSEN_OPTIONS).
NAMES = {"typing": "names", "type_descriptions": TYPE_DESCRIPTIONS, "names_support_weight": 0.25,
         "decoding": "constrained", "detection_bias": 0.5, "eval_inner_steps": 50,
         "join_adjacent": True}  # fmt: skip
TYPER = {**NAMES, "typing": "finetune", "type_descriptions": None}
"""The fine-tuned typer (its own settings: `metanlp.meta.span_typer.TYPER_DEFAULTS`) with the
same detection."""

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=1, val_episodes=1, test_episodes=2, max_length=48,
                  inner_steps=1, train_shots=1),
    "default": Size(max_steps=150, meta_batch_size=2, val_episodes=8, test_episodes=30,
                    max_length=64),
    "full": Size(max_steps=3000, meta_batch_size=4, val_episodes=100, test_episodes=600,
                 max_length=128, finetune_baseline=True),
}  # fmt: skip


def _options(parser) -> None:
    parser.add_argument("--polish", action="store_true",
                        help="also meta-train on Polish name types (bigbench extra)")  # fmt: skip
    parser.add_argument("--typing", choices=["names", "finetune", "prototypes"], default="names",
                        help="test-time span typing: by the types' names, the fine-tuned typer "
                        "or the prototype head")  # fmt: skip


def algorithm_options(typing: str) -> dict:
    """The learner's options for ``--typing`` (the typer's defaults were chosen on validation
    types, see benchmarks/README.md)."""
    if typing == "prototypes":
        return dict(ALGORITHM)
    return {**ALGORITHM, **(NAMES if typing == "names" else TYPER)}


def config_for(args):
    """The `MetaTrainerConfig` of the recipe (also used by ``benchmarks/bench_ner.py``)."""
    episodes = {"kind": "ner", "n_way": 3, "k_shot": 1, "q_query": 1, "mode": "relaxed",
                "scheme": "io"}  # fmt: skip
    train = [{**episodes, "dataset": "wnut16", "types": TRAIN_TYPES, "n_way": len(TRAIN_TYPES)}]
    if getattr(args, "polish", False):
        train = [{**train[0], "weight": 2.0},
                 {**episodes, "dataset": POLISH, "types": POLISH_NAMES, "weight": 1.0}]  # fmt: skip
    options = algorithm_options(getattr(args, "typing", "names"))
    size = getattr(args, "size", None)
    if options.get("typing") == "finetune" and getattr(size, "inner_steps", None) is not None:
        # a size that shortens the inner loops (smoke) shortens the typer's fine-tuning too
        options["typing_finetune"] = {"steps": size.inner_steps}
    return trainer_config(
        args, "meta", task="token", adapt="top", adapt_options={"top_layers": 2},
        algorithm="decomposed", algorithm_config=options,
        optimizer={"lr": 1e-4, "schedule": "cosine", "warmup_steps": 5},
        metric_for_best="f1", data={"train": train, "val": train[0]},
    )  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES, extra=_options)
    started = time.perf_counter()
    from metanlp.baselines import NearestToken
    from metanlp.corpora import load_corpus
    from metanlp.episodes import EpisodeSamplingError, NERSampler

    wnut = load_corpus("wnut16", args.data)
    if args.polish:
        require_optional_corpus(args, POLISH, "--polish")
    learner, start, info = meta_train(config_for(args))
    if learner is None:  # another process of a multi-process run
        return 0
    methods = {**methods_for(learner, start, args.size), "nnshot": NearestToken(start.model)}
    settings = []
    for name, (n_way, k) in SETTINGS.items():
        setting = f"{name} (relaxed)"
        try:
            sampler = NERSampler(wnut, n_way=n_way, k_shot=k, q_query=k, types=TEST_TYPES,
                                 mode="relaxed", scheme="io", name="wnut16",
                                 seed=args.seed + 3000 + 10 * n_way + k)  # fmt: skip
            results = score_setting(args, setting, sampler, {"wnut16": wnut}, methods,
                                    learner.tokenizer)  # fmt: skip
        except EpisodeSamplingError as err:
            print(f"\n[{setting}] not possible: {err}")
            results = f"relaxed sampling cannot draw it: {err}"
        settings.append((setting, results))
    origin = "frequent WNUT-16 types" + (" and Polish names" if args.polish else "")
    write_report(args, f"Decomposed few-shot NER on rare WNUT-16 types, meta-trained on {origin}",
                 settings, info, started)  # fmt: skip


if __name__ == "__main__":
    main()
