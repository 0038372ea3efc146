"""Acceptance run of the trainer: meta-train (the packaged default config, overridable) and score
the un-meta-trained start against the meta-trained weights on the same fixed held-out episodes
(tweets of the unseen "coachella" domain, 3-way 8-shot; BBC News topics, 5-way 5-shot), 95% CIs.

    python benchmarks/trainer_acceptance.py --algorithm maml   --max-steps 60
    python benchmarks/trainer_acceptance.py --algorithm fomaml --max-steps 60
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metanlp.corpora import load_corpus
from metanlp.episodes import ClassificationSampler, EpisodeCollator
from metanlp.training import MetaTrainer
from metanlp.training.config import MetaTrainerConfig
from metanlp.training.validation import score_episode, summarize_scores


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", default="maml", help="registry name (maml, fomaml, ...)")
    parser.add_argument("--max-steps", type=int, default=60, help="meta-steps (default config: 60)")
    parser.add_argument("--episodes", type=int, default=20, help="held-out episodes per setting")
    parser.add_argument("--val-episodes", type=int, default=16, help="meta-validation episodes")
    parser.add_argument("--eval-every", type=int, default=20, help="meta-validate every M steps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", default="runs/accept", help="output folder")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config = MetaTrainerConfig.from_yaml(
        "default",
        algorithm=args.algorithm,
        max_steps=args.max_steps,
        output_dir=f"{args.out}/{args.algorithm}",
        overwrite_output_dir=True,  # each acceptance run starts afresh
        eval_every=args.eval_every,
        save_every=args.eval_every,
        progress_bar=False,
    )
    config.data.val_episodes = args.val_episodes
    trainer = MetaTrainer(config)
    collator = EpisodeCollator(trainer.algorithm.model.tokenizer, config.data.max_length)
    common = {"seed": 777, "collator": collator}
    tests = {
        "tweets/coachella 3-way 8-shot": ClassificationSampler(
            load_corpus("tweets"), group_by="domain", groups=["coachella"], n_way=None,
            k_shot=8, q_query=8, name="tweets", **common,
        ),
        "bbc_news 5-way 5-shot": ClassificationSampler(
            load_corpus("bbc_news"), n_way=5, k_shot=5, q_query=5, name="bbc_news", **common
        ),
    }  # fmt: skip
    episodes = {k: [s.build(spec) for spec in s.specs(args.episodes)] for k, s in tests.items()}

    def score() -> dict:
        trainer.algorithm.model.eval()
        return {
            name: summarize_scores(
                [score_episode(trainer.algorithm, trainer._to_device(e)) for e in eps]
            )
            for name, eps in episodes.items()
        }

    started = time.time()
    before = score()
    eval_seconds = time.time() - started
    started = time.time()
    state = trainer.train()
    train_seconds = time.time() - started
    after = score()
    report = {
        "algorithm": args.algorithm,
        "steps": state.step,
        "best_step": state.best_step,
        "best_val": state.best_metric,
        "train_seconds": round(train_seconds),
        "eval_seconds_per_model": round(eval_seconds),
        "episodes": args.episodes,
        "before": before,
        "after": after,
    }
    print(json.dumps(report, indent=1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.algorithm}_report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
