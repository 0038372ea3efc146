"""Few-shot NER on WNUT-16 tweets: meta-train on some entity types, test on other, unseen types.

    python recipes/ner_wnut16.py --data data              # CPU default (see README.md)
    python recipes/ner_wnut16.py --data data --full       # GPU size, 600 test episodes
    python recipes/ner_wnut16.py --data data --polish     # meta-train on Polish types instead

Episodes follow Few-NERD (N-way K~2K-shot, greedy sentence sampling, IO tags; ``--mode relaxed``
by default: mentions of other types count as ``O``). Meta-training: first-order Proto-MAML on
MiniLM with a per-token head started from per-tag prototypes (top 2 layers adapted), on 5-way
1~2-shot episodes of the five frequent types. Test: 5-way 1~2-shot and 5~10-shot episodes of the
five rare types, entity-level micro-F1 (seqeval, strict IOB2). A setting the data cannot supply
(too few mentions for K~2K support + query) is reported as not run, with the sampler's reason.

``--polish`` (bigbench extra: ``python data_scripts/build_bigbench.py --out data --task
polish_sequence_labeling``) meta-trains on the 24 Polish sequence-labelling types and tests on
the same WNUT-16 types: cross-lingual, cross-dataset transfer.
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

TRAIN_TYPES = ["person", "geo-loc", "other", "company", "facility"]
TEST_TYPES = ["product", "musicartist", "sportsteam", "tvshow", "movie"]
POLISH = "bigbench/polish_sequence_labeling"
SETTINGS = {"5-way 1~2-shot": 1, "5-way 5~10-shot": 5}

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=1, val_episodes=1, test_episodes=2, max_length=96,
                  inner_steps=1, train_shots=1),
    "default": Size(max_steps=60, meta_batch_size=2, val_episodes=8, test_episodes=20,
                    max_length=96),
    "full": Size(max_steps=2000, meta_batch_size=4, val_episodes=100, test_episodes=600,
                 max_length=128, finetune_baseline=True),
}  # fmt: skip


def _options(parser) -> None:
    parser.add_argument("--mode", choices=["relaxed", "strict"], default="relaxed",
                        help="Few-NERD rule (a): strict keeps only sentences whose mentions are "
                        "all target types; relaxed tags other types O")  # fmt: skip
    parser.add_argument("--polish", action="store_true",
                        help="meta-train on Polish sequence labelling (bigbench extra)")  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES, extra=_options)
    started = time.perf_counter()
    from metanlp.corpora import load_corpus
    from metanlp.episodes import EpisodeSamplingError, NERSampler

    wnut = load_corpus("wnut16", args.data)
    if args.polish:
        require_optional_corpus(args, POLISH, "--polish")
        train = {"dataset": POLISH, "types": None}
    else:
        train = {"dataset": "wnut16", "types": TRAIN_TYPES}
    source = {**train, "kind": "ner", "n_way": 5, "k_shot": 1, "q_query": 1, "mode": args.mode,
              "scheme": "io"}  # fmt: skip
    config = trainer_config(
        args, "polish" if args.polish else "meta",
        task="token", adapt="top", adapt_options={"top_layers": 2}, algorithm="protomaml",
        algorithm_config={"inner_steps": 3, "eval_inner_steps": 5, "inner_lr": 5e-3,
                          "first_order": True},
        optimizer={"lr": 2e-4, "schedule": "cosine", "warmup_steps": 5},
        metric_for_best="f1",
        data={"train": [source], "val": source},
    )  # fmt: skip
    learner, start, info = meta_train(config)
    if learner is None:  # another process of a multi-process run
        return 0
    methods = methods_for(learner, start, args.size)
    settings = []
    for name, k in SETTINGS.items():
        setting = f"{name} ({args.mode})"
        try:
            sampler = NERSampler(wnut, n_way=5, k_shot=k, q_query=k, types=TEST_TYPES,
                                 mode=args.mode, scheme="io", name="wnut16",
                                 seed=args.seed + 2000 + k)  # fmt: skip
            results = score_setting(args, setting, sampler, {"wnut16": wnut}, methods,
                                    learner.tokenizer)  # fmt: skip
        except EpisodeSamplingError as err:
            print(f"\n[{setting}] not possible: {err}")
            results = f"{args.mode} sampling cannot draw it: {err}"
        settings.append((setting, results))
    origin = "Polish sequence-labelling types" if args.polish else "the frequent WNUT-16 types"
    write_report(args, f"Few-shot NER on rare WNUT-16 types, meta-trained on {origin}",
                 settings, info, started)  # fmt: skip


if __name__ == "__main__":
    main()
