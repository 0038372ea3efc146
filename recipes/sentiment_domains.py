"""Few-shot sentiment across tweet domains: meta-train on some topics, test on held-out topics.

    python recipes/sentiment_domains.py --data data            # CPU default (see README.md)
    python recipes/sentiment_domains.py --data data --full     # GPU size, 600 test episodes

Meta-training: first-order Proto-MAML on MiniLM (top 2 layers adapted, head from the support
prototypes), 3-way sentiment episodes (negative / neutral / positive) drawn per domain from four
tweet domains. Meta-validation: the small "other" domain. Test: the held-out domains "coachella"
and "deflategate", 3-way and 2-way, K = 4, 8, 16, against the same model with no meta-training,
frozen-encoder prototypes and (``--full``) fine-tuning. Writes ``outputs/sentiment_domains/``.
"""

from __future__ import annotations

import time

from common import (
    Size,
    meta_train,
    methods_for,
    parse_args,
    score_setting,
    trainer_config,
)
from report import write_report

TRAIN_DOMAINS = ["airlines", "apple", "claritin", "driverless_cars"]
VAL_DOMAINS = ["other"]
TEST_DOMAINS = ["coachella", "deflategate"]
SHOTS = (4, 8, 16)
WAYS = (3, 2)

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=1, val_episodes=1, test_episodes=2, query=2,
                  max_length=24, inner_steps=1, train_shots=2),
    "default": Size(max_steps=80, meta_batch_size=2, val_episodes=8, test_episodes=20, query=8),
    "full": Size(max_steps=2000, meta_batch_size=4, val_episodes=100, test_episodes=600, query=15,
                 max_length=128, finetune_baseline=True),
}  # fmt: skip


def sentiment_trainer_settings(k_shot: int = 8, q_query: int = 8) -> dict:
    """The meta-training settings of this recipe (also used by `demo.py`)."""
    source = {"dataset": "tweets", "group_by": "domain", "n_way": None, "drop_small": True}
    return {
        "adapt": "top",
        "adapt_options": {"top_layers": 2},
        "algorithm": "protomaml",
        # First order: on CPU the second-order graph through 6 layers costs 2-3x the time.
        "algorithm_config": {"inner_steps": 3, "eval_inner_steps": 5, "inner_lr": 5e-3,
                             "first_order": True},
        "optimizer": {"lr": 2e-4, "schedule": "cosine", "warmup_steps": 5},
        "data": {
            "train": [{**source, "groups": TRAIN_DOMAINS, "k_shot": k_shot, "q_query": q_query}],
            "val": {**source, "groups": VAL_DOMAINS, "k_shot": 5, "q_query": 5},
        },
    }  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES)
    started = time.perf_counter()
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler

    size = args.size
    shots = SHOTS[:1] if args.smoke else SHOTS
    config = trainer_config(args, "meta", **sentiment_trainer_settings())
    learner, start, info = meta_train(config)
    if learner is None:  # another process of a multi-process run
        return 0
    methods = methods_for(learner, start, size)
    tweets = load_corpus("tweets", args.data)
    settings = []
    for n_way in WAYS:
        for k in shots:
            sampler = ClassificationSampler(
                tweets, n_way=n_way, k_shot=k, q_query=size.query, group_by="domain",
                groups=TEST_DOMAINS, name="tweets", seed=args.seed + 1000 + 10 * n_way + k,
            )  # fmt: skip
            setting = f"{n_way}-way {k}-shot"
            settings.append((setting, score_setting(args, setting, sampler, {"tweets": tweets},
                                                    methods, learner.tokenizer)))  # fmt: skip
    title = f"Sentiment on held-out tweet domains ({', '.join(TEST_DOMAINS)})"
    write_report(args, title, settings, info, started)


if __name__ == "__main__":
    main()
