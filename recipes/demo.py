"""The main job (`make demo`): a short real meta-training of MiniLM, then a fair test.

    python recipes/demo.py --data data        # about 5-10 minutes on 2 idle CPU cores

1. Meta-train first-order Proto-MAML on MiniLM (top 2 layers + a head started from the support
   prototypes) on 3-way sentiment episodes from four tweet domains (airlines, Apple, Claritin,
   driverless cars), validating on a fifth ("other").
2. Draw fixed test episodes from a domain never seen in meta-training ("coachella"): 3-way
   sentiment, 5 labelled tweets per class.
3. Score, on the same episodes: the meta-trained learner, the very same learner before
   meta-training (same adaptation rule, no meta-learning), and frozen-encoder prototypes.
4. Print a table with 95% confidence intervals; write ``outputs/demo/`` (summary.json / .md /
   .png, per-episode values, the episode file, the learning curve and the learner folder, which
   `metanlp adapt-predict --model outputs/demo/meta/learner` loads).
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
from sentiment_domains import sentiment_trainer_settings

TEST_DOMAIN = "coachella"
K_SHOT = 5

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=1, val_episodes=1, test_episodes=2, query=2,
                  max_length=24, inner_steps=1, train_shots=2),
    "default": Size(max_steps=60, meta_batch_size=2, val_episodes=8, test_episodes=30, query=10),
    "full": Size(max_steps=1000, meta_batch_size=4, val_episodes=100, test_episodes=600, query=15,
                 max_length=128, finetune_baseline=True),
}  # fmt: skip


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES)
    started = time.perf_counter()
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler

    size = args.size
    print(f"metanlp demo ({args.size_name} size): meta-train on tweet sentiment, test on the "
          f"held-out '{TEST_DOMAIN}' domain, {size.test_episodes} test episodes, 3-way {K_SHOT}-shot")  # fmt: skip
    config = trainer_config(args, "meta", **sentiment_trainer_settings(k_shot=K_SHOT, q_query=5))
    learner, start, info = meta_train(config)
    if learner is None:  # another process of a multi-process run
        return 0
    tweets = load_corpus("tweets", args.data)
    sampler = ClassificationSampler(tweets, n_way=3, k_shot=K_SHOT, q_query=size.query,
                                    group_by="domain", groups=[TEST_DOMAIN], name="tweets",
                                    seed=args.seed + 4242)  # fmt: skip
    setting = f"{TEST_DOMAIN} 3-way {K_SHOT}-shot"
    results = score_setting(args, setting, sampler, {"tweets": tweets},
                            methods_for(learner, start, size), learner.tokenizer)  # fmt: skip
    title = f"Demo: few-shot sentiment on the unseen '{TEST_DOMAIN}' tweets"
    write_report(args, title, [(setting, results)], info, started)


if __name__ == "__main__":
    main()
