"""The general learner: meta-trained on a broad task distribution, for tasks nobody trained it for.

    python recipes/general_learner.py --data data           # CPU default (under an hour on 2 cores)
    python recipes/general_learner.py --data data --full    # GPU size
    python recipes/general_learner.py --data data --mode smlmt      # ablation: self-supervised only
    python recipes/general_learner.py --data data --mode labelled   # ablation: labelled only
    python recipes/general_learner.py --data data --names   # classes' names mixed in (issue 29)

Meta-training stream (`metanlp.general`): tweet sentiment (one family per domain), every BIG-bench
task with a small fixed label set (when ``python data_scripts/build_bigbench.py --out data
--families`` has been run), and self-supervised masked-word (SMLMT) tasks from the texts of each
of those corpora and of WNUT-16; a temperature of 2 over corpus sizes and half of the episodes
self-supervised. ProtoNet over every encoder weight (the cheapest meta-step, so the most tasks
per CPU hour). Never read: BBC News, SNIPS intents, BIG-bench ``social_support`` and
``irony_identification``, the tweet domain ``coachella``. The saved learner adapts with the
support-set adaptation policy (`metanlp.meta.policy`): ``MetaLearner.from_pretrained(
"outputs/general_learner/meta/learner")``. The test here is quick (prototypes, no policy);
`benchmarks/bench_accuracy.py` scores the learner with its policy against SetFit and baselines.
"""

from __future__ import annotations

import sys
import time

from common import Size, meta_train, parse_args, score_setting, trainer_config
from report import write_report

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=1, val_episodes=0, test_episodes=2, query=2,
                  max_length=24, train_shots=2),
    "default": Size(max_steps=300, meta_batch_size=2, val_episodes=0, test_episodes=20, query=5,
                    max_length=64),
    "full": Size(max_steps=6000, meta_batch_size=4, val_episodes=0, test_episodes=200, query=8,
                 max_length=128),
}  # fmt: skip
SETTINGS = [  # (title, corpus, n_way, K); the held-out corpora of metanlp.general.HELD_OUT
    ("BBC News", "bbc_news", 5, 5),
    ("SNIPS", "bigbench/intent_recognition", 7, 5),
    ("social support", "bigbench/social_support", 3, 5),
    ("irony", "bigbench/irony_identification", 2, 5),
]


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
    parser.add_argument("--names", action="store_true",
                        help="ProtoNet with class names (metanlp.names): episodes carry their "
                             "class names and w(K) is meta-learned")  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES, extra=_options)
    started = time.perf_counter()
    from metanlp.baselines import FrozenPrototypes
    from metanlp.corpora import CorpusError, load_corpus
    from metanlp.episodes import ClassificationSampler, EpisodeCollator
    from metanlp.general import GeneralTasks, general_task_sampler
    from metanlp.meta.policy import AdaptPolicy
    from metanlp.models import load_encoder

    size = args.size
    k = size.train_shots or 5
    tasks = GeneralTasks(mode=args.mode, k_shot=k, q_query=k, bigbench=not args.no_bigbench)
    collator = EpisodeCollator(load_encoder().tokenizer, size.max_length)
    train, families = general_task_sampler(args.data, collator, tasks, seed=args.seed)
    print(f"task families ({args.mode}): " + ", ".join(
        f"{name} {p:.3f}" for name, p in sorted(families["probabilities"].items(), key=lambda x: -x[1])
    ))  # fmt: skip
    config = trainer_config(
        args, "meta", adapt="all", algorithm="protonet",
        algorithm_config=NAMES_CONFIG if args.names else {},
        optimizer={"lr": 3e-5, "schedule": "cosine", "warmup_steps": max(1, size.max_steps // 20)},
        data={"train": [], "val": None}, keep_best=False,
    )  # fmt: skip
    names = sorted(families["families"])
    learner, start, info = meta_train(config, train_sampler=train, datasets=names)
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
    for title, corpus, n_way, shots in SETTINGS[:1] if args.smoke else SETTINGS:
        try:
            data = load_corpus(corpus, args.data)
        except CorpusError as err:
            settings.append((f"{title} {n_way}-way", f"not built ({err})"))
            continue
        name = corpus.split("/")[-1]
        sampler = ClassificationSampler(data, n_way=n_way, k_shot=shots, q_query=size.query,
                                        name=name, seed=args.seed + 5000 + shots)  # fmt: skip
        setting = f"{title} {n_way}-way {shots}-shot"
        settings.append((setting, score_setting(args, setting, sampler, {name: data}, methods,
                                                learner.tokenizer)))  # fmt: skip
    learner.config.policy = AdaptPolicy().to_dict()
    write_report(args, "The general learner on held-out corpora (prototypes, no fine-tuning)",
                 settings, info, started)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
