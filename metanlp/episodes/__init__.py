"""Few-shot episodes from Hugging Face datasets: classification and Few-NERD-style NER.

See docs/episodes.md for a guide.
"""

from __future__ import annotations

from metanlp.episodes.classification import ClassificationSampler
from metanlp.episodes.collate import EpisodeCollator
from metanlp.episodes.io import load_episode_specs, load_episodes, save_episodes
from metanlp.episodes.mixture import MixtureSampler
from metanlp.episodes.ner import NERSampler
from metanlp.episodes.sampler import EpisodeSampler, episode_rng
from metanlp.episodes.smlmt import SMLMTSampler, SMLMTSource
from metanlp.episodes.sources import ClassificationSource, NERSource
from metanlp.episodes.splits import cross_dataset_types, split_names
from metanlp.episodes.tags import episode_tag_names, episode_word_tags, word_predictions
from metanlp.episodes.types import Episode, EpisodeSamplingError, EpisodeSpec

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
