"""How much `adapt(..., calibrate=True)` changes the query probabilities (not the predictions).

BBC News N-way K-shot episodes (seeded class and example draws), one learner (its own
adaptation; ``--policy`` adds its adaptation policy); per episode the same support set is adapted
without and with calibration, and the query set is scored by
negative log-likelihood (`sklearn.metrics.log_loss`), top-label expected calibration error
(10 equal-width confidence bins) and accuracy.

```bash
python benchmarks/bench_calibration.py --episodes 5 --ways 5 --shots 5 --query 10
```
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from sklearn.metrics import log_loss

from metanlp import MetaLearner
from metanlp.corpora import load_corpus


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: the bin-weighted gap between confidence and accuracy."""
    confidence, predicted = proba.max(1), proba.argmax(1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = (predicted[in_bin] == labels[in_bin]).mean() - confidence[in_bin].mean()
            total += in_bin.mean() * abs(gap)
    return float(total)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learner", default=None, help="saved learner; default: plain MiniLM")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--query", type=int, default=10, help="query texts per class")
    parser.add_argument(
        "--policy", action="store_true", help="adapt with the learner's policy (default: off)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    corpus = load_corpus("bbc_news")
    names = corpus.features["label"].names
    by_class: dict[int, list[str]] = {}
    for text, label in zip(corpus["text"], corpus["label"], strict=True):
        by_class.setdefault(label, []).append(text)
    torch.manual_seed(0)
    learner = MetaLearner.from_pretrained(args.learner, device="cpu")
    rows = []
    for episode in range(args.episodes):
        rng = random.Random(episode)
        support, support_labels, query, query_labels = [], [], [], []
        for c in rng.sample(sorted(by_class), args.ways):
            picked = rng.sample(by_class[c], args.shots + args.query)
            support += picked[: args.shots]
            support_labels += [names[c]] * args.shots
            query += picked[args.shots :]
            query_labels += [names[c]] * args.query
        began = time.perf_counter()
        policy = None if args.policy else False
        plain = learner.adapt(support, support_labels, policy=policy)
        middle = time.perf_counter()
        calibrated = learner.adapt(support, support_labels, policy=policy, calibrate=True)
        row = {"episode": episode, "temperature": calibrated.temperature,
               "seconds_plain": middle - began,
               "seconds_calibrated": time.perf_counter() - middle}  # fmt: skip
        y = np.array([plain.classes_.index(v) for v in query_labels])
        for name, clf in (("plain", plain), ("calibrated", calibrated)):
            proba = clf.predict_proba(query)
            row[f"nll_{name}"] = float(log_loss(y, proba, labels=list(range(args.ways))))
            row[f"ece_{name}"] = expected_calibration_error(proba, y)
            row[f"accuracy_{name}"] = float((proba.argmax(1) == y).mean())
        rows.append(row)
        print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "episode"}
    print(
        f"{args.episodes} episodes, {args.ways}-way {args.shots}-shot: NLL {mean['nll_plain']:.3f}"
        f" -> {mean['nll_calibrated']:.3f}, ECE {mean['ece_plain']:.3f} -> "
        f"{mean['ece_calibrated']:.3f}, accuracy {mean['accuracy_plain']:.3f} -> "
        f"{mean['accuracy_calibrated']:.3f}, T {mean['temperature']:.2f}, "
        f"{mean['seconds_plain']:.1f} s -> {mean['seconds_calibrated']:.1f} s per adaptation"
    )
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": rows, "mean": mean}, indent=2), "utf-8")
    return mean


if __name__ == "__main__":
    main()
