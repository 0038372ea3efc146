"""Few-shot episodes from Hugging Face datasets: classification and Few-NERD-style NER.

See docs/episodes.md for a guide.
"""

from __future__ import annotations

from .classification import ClassificationSampler
from .collate import EpisodeCollator
from .io import load_episode_specs, load_episodes, save_episodes
from .mixture import MixtureSampler
from .ner import NERSampler
from .sampler import EpisodeSampler, episode_rng
from .smlmt import SMLMTSampler, SMLMTSource
from .sources import ClassificationSource, NERSource
from .splits import cross_dataset_types, split_names
from .tags import episode_tag_names, episode_word_tags, word_predictions
from .types import Episode, EpisodeSamplingError, EpisodeSpec

__all__ = [
    "ClassificationSampler",
    "ClassificationSource",
    "Episode",
    "EpisodeCollator",
    "EpisodeSampler",
    "EpisodeSamplingError",
    "EpisodeSpec",
    "MixtureSampler",
    "NERSampler",
    "NERSource",
    "SMLMTSampler",
    "SMLMTSource",
    "cross_dataset_types",
    "episode_rng",
    "episode_tag_names",
    "episode_word_tags",
    "load_episode_specs",
    "load_episodes",
    "save_episodes",
    "split_names",
    "word_predictions",
]
