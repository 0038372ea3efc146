"""Several datasets or task families in one meta-training stream, picked with sampling weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from metanlp.episodes.sampler import EpisodeSampler
from metanlp.episodes.types import Episode, EpisodeSpec


class MixtureSampler(EpisodeSampler):
    """Draw each episode from one of several samplers, chosen at random with ``weights``.

    Episode ``i`` is still a pure function of ``(seed, i)``: the mixture's generator picks the
    component and then draws that component's episode, so the components' own seeds and
    positions are not used (their settings, sources and tokenizers are).

    Args:
        samplers (`Sequence[EpisodeSampler]` or `Mapping[str, EpisodeSampler]`): The components
            (classification and NER may be mixed).
        weights (`Sequence[float]`, `Mapping[str, float]` or ``"size"``, *optional*): Relative
            frequencies; uniform by default. ``"size"`` weighs each component by the examples
            it can draw from (`sampler_size`).
        temperature (`float`, defaults to 1.0): Sampling temperature over the components: the
            probability of component ``i`` is proportional to ``weights[i] ** (1 / temperature)``.
            With ``weights="size"``, 1 samples in proportion to size, 2 to its square root and a
            large value nearly uniformly, so that no single large corpus dominates.
        **kwargs: `EpisodeSampler` arguments (``seed``, ``rank``, ``world_size``).

    Example:
        ```python
        >>> mix = MixtureSampler({"bbc": bbc_sampler, "tweets": tweet_sampler},
        ...                      weights={"bbc": 1, "tweets": 3}, seed=0)
        >>> episode = mix.episode(0)  # built with the chosen component's tokenizer
        ```
    """

    def __init__(
        self,
        samplers: Sequence[EpisodeSampler] | Mapping[str, EpisodeSampler],
        weights: Sequence[float] | Mapping[str, float] | str | None = None,
        temperature: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(samplers, Mapping):
            names, components = list(samplers), list(samplers.values())
        else:
            components = list(samplers)
            names = [f"component{i}" for i in range(len(components))]
        if not components:
            raise ValueError("MixtureSampler needs at least one sampler.")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not (temperature > 0)
        ):
            raise ValueError(f"temperature={temperature!r}; it must be a number > 0.")
        if weights is None:
            w = np.ones(len(components))
        elif isinstance(weights, str):
            if weights != "size":
                raise ValueError(f"weights={weights!r}; use 'size', a list or a mapping.")
            w = np.asarray([sampler_size(c) for c in components], dtype=float)
        elif isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ValueError(f"weights name unknown samplers {unknown}; known: {names}.")
            w = np.asarray([float(weights.get(n, 0.0)) for n in names])
        else:
            w = np.asarray(list(weights), dtype=float)
            if len(w) != len(components):
                raise ValueError(f"{len(w)} weights for {len(components)} samplers.")
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {w.tolist()}.")
        w = np.where(w > 0, w / w.max(), 0.0) ** (1.0 / float(temperature))
        self.names, self.components, self.probs = names, components, w / w.sum()
        self.temperature = float(temperature)
        self.sources = {}
        for component in components:
            for key, source in component.sources.items():
                known = self.sources.get(key)
                if known is not None and known.fingerprint != source.fingerprint:
                    raise ValueError(
                        f"Two samplers use different data under the same name {key!r}; "
                        "give the datasets distinct names (name=...)."
                    )
                self.sources[key] = source

    @property
    def num_examples(self) -> int:
        """Examples of all components together (a mixture inside a mixture weighs by this)."""
        return int(sum(sampler_size(c) for c in self.components))

    def draw(self, rng: np.random.Generator, index: int) -> EpisodeSpec:
        component = self.components[int(rng.choice(len(self.components), p=self.probs))]
        spec = component.draw(rng, index)
        spec.seed = self.seed
        return spec

    def build(self, spec: EpisodeSpec) -> Episode:
        if self.collator is not None:
            return super().build(spec)
        for component in self.components:
            if spec.dataset in component.sources and component.collator is not None:
                return component.build(spec)
        raise ValueError(
            f"No component sampler for dataset {spec.dataset!r} has a tokenizer; pass tokenizer=... "
            "to the components or to the mixture."
        )


def sampler_size(sampler: EpisodeSampler) -> int:
    """How many examples a sampler draws from: its ``num_examples``, else its sources' rows."""
    size = getattr(sampler, "num_examples", None)
    if size is None:
        size = sum(len(source) for source in sampler.sources.values())
    return int(size)
