"""A small decomposed NER learner on the real MiniLM, shared by the decomposed-learner tests."""

from __future__ import annotations

import torch

from metanlp.api import MetaLearner


def small_decomposed_learner(max_length: int) -> MetaLearner:
    """Top layer meta-learned, two detector inner steps, prototype typing without inner steps."""
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(
        task="token",
        algorithm="decomposed",
        adapt="top",
        adapt_options={"top_layers": 1},
        algorithm_config={"inner_steps": 2, "typing_inner_steps": 0},
        max_length=max_length,
        device="cpu",
    )
