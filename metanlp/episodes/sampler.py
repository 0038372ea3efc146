"""What every episode sampler shares: seeding, rank sharding, resumable iteration, collation.

Episode ``i`` of a sampler is a pure function of ``(seed, i)``: it is drawn with a numpy
``Generator`` seeded from ``SeedSequence([seed, i])``. A process of rank ``r`` out of
``world_size`` iterates the global indices ``r, r + world_size, r + 2 * world_size, ...``, so
ranks draw distinct shards and their union is exactly the single-process stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from metanlp.episodes.collate import EpisodeCollator
from metanlp.episodes.sources import ClassificationSource, NERSource
from metanlp.episodes.types import Episode, EpisodeSpec

Source = ClassificationSource | NERSource


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """The generator episode ``index`` of a stream seeded ``seed`` is drawn with."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


class EpisodeSampler:
    """Base class: subclasses implement `draw(rng, index) -> EpisodeSpec` and set `sources`.

    Args:
        seed (`int`, defaults to 0): Stream seed (non-negative).
        rank (`int`, defaults to 0), world_size (`int`, defaults to 1): This process's shard.
        tokenizer (`PreTrainedTokenizerBase`, *optional*): Needed to build tensors (`episode`,
            iteration); without it only specs can be drawn.
        max_length (`int`, defaults to 128): Truncation length for the collator.
        model (`PreTrainedModel`, *optional*): Checked against the tokenizer when given.
        collator (`EpisodeCollator`, *optional*): Share one collator (and its cache) between samplers;
            replaces ``tokenizer``/``max_length``.
    """

    sources: dict[str, Source]

    def __init__(
        self,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int = 128,
        model: PreTrainedModel | None = None,
        collator: EpisodeCollator | None = None,
    ) -> None:
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed={seed!r}; use a non-negative integer.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank}, world_size={world_size}; need 0 <= rank < world_size.")
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.next_index = self.rank
        if collator is None and tokenizer is not None:
            collator = EpisodeCollator(tokenizer, max_length, model=model)
        elif collator is not None and model is not None:
            from metanlp.models import check_tokenizer_matches

            check_tokenizer_matches(model, collator.tokenizer)
        self.collator = collator

    # -- to implement --------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator, index: int) -> EpisodeSpec:
        raise NotImplementedError

    # -- specs and episodes --------------------------------------------------------------------
    def spec(self, index: int) -> EpisodeSpec:
        """The definition of global episode ``index`` (the same on every rank and every run)."""
        if index < 0:
            raise ValueError(f"Episode index {index} is negative.")
        return self.draw(episode_rng(self.seed, index), int(index))

    def build(self, spec: EpisodeSpec) -> Episode:
        """Collate a spec into tensors with this sampler's tokenizer."""
        if self.collator is None:
            raise ValueError(
                "This sampler has no tokenizer; pass tokenizer=... (or collator=...) to build tensors."
            )
        if spec.dataset not in self.sources:
            raise KeyError(
                f"Spec is for dataset {spec.dataset!r}; this sampler has {sorted(self.sources)}."
            )
        return self.collator(spec, self.sources[spec.dataset])

    def episode(self, index: int) -> Episode:
        return self.build(self.spec(index))

    def specs(self, n: int, start: int = 0) -> list[EpisodeSpec]:
        """Global episodes ``start .. start + n - 1``, ignoring the rank (e.g. a fixed evaluation set)."""
        return [self.spec(i) for i in range(start, start + n)]

    def shard_indices(self, n: int) -> list[int]:
        """The global indices this rank takes among the first ``n`` episodes."""
        return list(range(self.rank, n, self.world_size))

    # -- iteration and resuming ----------------------------------------------------------------
    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.next_episode()

    def next_spec(self) -> EpisodeSpec:
        spec = self.spec(self.next_index)
        self.next_index += self.world_size
        return spec

    def next_episode(self) -> Episode:
        return self.build(self.next_spec())

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "next_index": self.next_index,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where `state_dict()` was taken; the seed and sharding must match."""
        for key in ("seed", "rank", "world_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"Cannot resume: saved {key}={state[key]} but this sampler has "
                    f"{key}={getattr(self, key)}. Build the sampler with the saved settings."
                )
        next_index = int(state["next_index"])
        if next_index % self.world_size != self.rank:
            raise ValueError(f"next_index={next_index} does not belong to rank {self.rank}.")
        self.next_index = next_index
