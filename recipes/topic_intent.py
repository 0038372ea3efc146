"""Few-shot topic and intent classification, meta-trained on other tasks.

    python recipes/topic_intent.py --data data              # CPU default (see README.md)
    python recipes/topic_intent.py --data data --full       # GPU size, 600 test episodes
    python recipes/topic_intent.py --data data --snips      # require the SNIPS intents (bigbench)

BBC News has only five topics, so a 5-way test leaves none for meta-training: the learner is
meta-trained elsewhere, on tweets, with two task families mixed: 5-way *topic* episodes (the
tweet's domain is the label: airlines, Apple, Claritin, Coachella, Deflategate, driverless cars)
and 3-way *sentiment* episodes within a domain. First-order Proto-MAML on MiniLM (top 2 layers
adapted, head from the support prototypes). Test: BBC News 5-way, K = 1 and 5; and, when the
bigbench extra is built (``python data_scripts/build_bigbench.py --out data --task
intent_recognition``), SNIPS intents 7-way, K = 1 and 5. Writes ``outputs/topic_intent/``.
"""

from __future__ import annotations

import sys
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

TOPICS = ["airlines", "apple", "claritin", "coachella", "deflategate", "driverless_cars"]
SNIPS = "bigbench/intent_recognition"
SHOTS = (1, 5)

SIZES = {
    "smoke": Size(max_steps=2, meta_batch_size=1, val_episodes=1, test_episodes=2, query=2,
                  max_length=24, inner_steps=1, train_shots=2),
    "default": Size(max_steps=60, meta_batch_size=2, val_episodes=8, test_episodes=20, query=5,
                    max_length=96),
    "full": Size(max_steps=2000, meta_batch_size=4, val_episodes=100, test_episodes=600,
                 query=15, max_length=256, finetune_baseline=True),
}  # fmt: skip


def _options(parser) -> None:
    parser.add_argument("--snips", action="store_true",
                        help="fail if the SNIPS intents (bigbench extra) are not built, "
                        "instead of skipping them")  # fmt: skip


def tweet_topics(tweets):
    """Tweets relabelled by their domain (an in-memory `datasets.Dataset`, ClassLabel labels)."""
    from datasets import ClassLabel, Dataset, Features, Value

    texts, domains = list(tweets["text"]), list(tweets["domain"])
    keep = [i for i, d in enumerate(domains) if d in TOPICS]
    features = Features({"text": Value("string"), "label": ClassLabel(names=TOPICS)})
    return Dataset.from_dict(
        {"text": [texts[i] for i in keep], "label": [domains[i] for i in keep]}, features=features
    )


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0], SIZES, extra=_options)
    started = time.perf_counter()
    from metanlp.corpora import CorpusError, load_corpus
    from metanlp.episodes import ClassificationSampler, EpisodeCollator, MixtureSampler
    from metanlp.models import load_encoder

    size = args.size
    snips = None
    try:
        snips = load_corpus(SNIPS, args.data)
    except CorpusError as err:
        if args.snips:
            sys.exit(f"--snips needs the optional bigbench corpus in {args.data}: {err}")
        snips_missing = f"bigbench extra not built ({err})"
        print(f"SNIPS intents skipped: {snips_missing}")
    tweets = load_corpus("tweets", args.data)
    k_train = size.train_shots or 5
    # Built here, not from the config: the topic family is tweets relabelled in memory.
    collator = EpisodeCollator(load_encoder().tokenizer, size.max_length)
    topic_data = tweet_topics(tweets)
    topics = ClassificationSampler(topic_data, n_way=5, k_shot=k_train, q_query=k_train,
                                   name="tweet_topics", collator=collator)  # fmt: skip
    sentiment = ClassificationSampler(tweets, n_way=None, k_shot=k_train, q_query=k_train,
                                      group_by="domain", groups=TOPICS, drop_small=True,
                                      name="tweets", collator=collator)  # fmt: skip
    train = MixtureSampler({"topics": topics, "sentiment": sentiment}, {"topics": 2, "sentiment": 1},
                           seed=args.seed, collator=collator)  # fmt: skip
    # Meta-validation on other episodes of the topic family (BBC and SNIPS stay unseen).
    val = ClassificationSampler(topic_data, n_way=3, k_shot=k_train, q_query=k_train,
                                name="tweet_topics", collator=collator, seed=1234)  # fmt: skip
    config = trainer_config(
        args, "meta", adapt="top", adapt_options={"top_layers": 2}, algorithm="protomaml",
        algorithm_config={"inner_steps": 3, "eval_inner_steps": 5, "inner_lr": 5e-3,
                          "first_order": True},
        optimizer={"lr": 2e-4, "schedule": "cosine", "warmup_steps": 5},
        data={"train": [], "val": None},
    )  # fmt: skip
    learner, start, info = meta_train(config, train_sampler=train, val_sampler=val,
                                      datasets=["tweets (topics by domain)", "tweets (sentiment)"])  # fmt: skip
    if learner is None:  # another process of a multi-process run
        return 0
    methods = methods_for(learner, start, size)
    bbc = load_corpus("bbc_news", args.data)
    tests = [("BBC News", bbc, "bbc_news", 5)]
    if snips is not None:
        tests.append(("SNIPS", snips, "intent_recognition", 7))
    settings = []
    for title, data, name, n_way in tests:
        for k in SHOTS:
            sampler = ClassificationSampler(data, n_way=n_way, k_shot=k, q_query=size.query,
                                            name=name, seed=args.seed + 3000 + k)  # fmt: skip
            setting = f"{title} {n_way}-way {k}-shot"
            settings.append((setting, score_setting(args, setting, sampler, {name: data},
                                                    methods, learner.tokenizer)))  # fmt: skip
    if snips is None:
        settings.append(("SNIPS 7-way", snips_missing))
    write_report(args, "Few-shot topics (BBC News) and intents (SNIPS), meta-trained on tweets",
                 settings, info, started)  # fmt: skip


if __name__ == "__main__":
    main()
