"""The general learner's task distribution: many labelled task families and self-supervised ones.

A learner meant for tasks nobody meta-trained it for should meet as many kinds of task as
possible during meta-training (Bansal et al., EMNLP 2020, "Self-Supervised Meta-Learning for
Few-Shot Natural Language Classification"). `general_task_sampler` mixes:

- **labelled families**: tweet sentiment, one family per tweet domain; every BIG-bench task with a
  small fixed label set (`metanlp.corpora.bigbench.build_families` finds them), one family per
  task, grouped by the BIG-bench task folder (``multiemo/*`` is one corpus of 20 tasks);
- **self-supervised families** (SMLMT, `metanlp.episodes.SMLMTSampler`): masked-word tasks from
  the texts of every corpus used, one family per corpus;

with a sampling temperature over corpus sizes inside each half and a fixed share of
self-supervised episodes (``smlmt_share``). The held-out corpora (`HELD_OUT`) are never read,
neither labels nor texts, so the scores on them are leave-one-corpus-out.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from metanlp.episodes import (
    ClassificationSampler,
    EpisodeCollator,
    EpisodeSampler,
    MixtureSampler,
    SMLMTSampler,
    SMLMTSource,
)

logger = logging.getLogger(__name__)

MODES = ("hybrid", "smlmt", "labelled")
HELD_OUT_TWEET_DOMAINS = ("coachella",)
HELD_OUT_BIGBENCH = ("intent_recognition", "social_support", "irony_identification")
HELD_OUT = ("bbc_news", *(f"bigbench/{t}" for t in HELD_OUT_BIGBENCH))
"""Corpora no general learner reads (plus the tweets of `HELD_OUT_TWEET_DOMAINS`): BBC News,
SNIPS intents (``intent_recognition``) and two further BIG-bench tasks held out by name."""
TWEET_DOMAINS = ("airlines", "apple", "claritin", "deflategate", "driverless_cars")


@dataclass
class GeneralTasks:
    """What goes into the general learner's meta-training stream.

    Args:
        mode (`str`, defaults to ``"hybrid"``): ``"hybrid"``, ``"smlmt"`` (self-supervised only)
            or ``"labelled"`` (labelled families only): the ablation of issue 17.
        n_way (`int`, defaults to 5): Classes per episode (a labelled family with fewer classes
            uses all of its own).
        k_shot, q_query (`int`, defaults to 5): Support and query examples per class.
        smlmt_share (`float`, defaults to 0.5): Share of self-supervised episodes in ``hybrid``.
        temperature (`float`, defaults to 2.0): Over corpus sizes within each half (1 =
            proportional to size, 2 = to its square root, large = uniform).
        held_out_bigbench (`list[str]`): BIG-bench tasks never read (SNIPS is always among them).
        bigbench (`bool`, defaults to `True`): Use the BIG-bench families when built; ``False``
            keeps to the default corpora (tweets, WNUT-16 texts).
        smlmt_options (`dict`): `SMLMTSource` arguments.
    """

    mode: str = "hybrid"
    n_way: int = 5
    k_shot: int = 5
    q_query: int = 5
    smlmt_share: float = 0.5
    temperature: float = 2.0
    held_out_bigbench: list[str] = field(default_factory=lambda: list(HELD_OUT_BIGBENCH))
    bigbench: bool = True
    smlmt_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"GeneralTasks.mode={self.mode!r}; choose one of {list(MODES)}.")
        if not 0.0 <= self.smlmt_share <= 1.0:
            raise ValueError(f"GeneralTasks.smlmt_share={self.smlmt_share!r} must be in [0, 1].")
        if "intent_recognition" not in self.held_out_bigbench:
            self.held_out_bigbench = ["intent_recognition", *self.held_out_bigbench]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def general_task_sampler(
    data_dir: str | os.PathLike,
    collator: EpisodeCollator,
    tasks: GeneralTasks | None = None,
    *,
    seed: int = 0,
) -> tuple[MixtureSampler, dict[str, Any]]:
    """The hybrid meta-training stream, and a description of its families for the model card.

    Args:
        data_dir (`str` or `os.PathLike`): Built corpora (``make data``; BIG-bench families by
            ``python data_scripts/build_bigbench.py --families``, used when present).
        collator (`EpisodeCollator`): Shared by every family (one tokenization cache).
        tasks (`GeneralTasks`, *optional*): The settings; defaults to `GeneralTasks()`.
        seed (`int`, defaults to 0): Stream seed.

    Returns:
        ``(sampler, info)``: ``info["families"]`` maps each corpus to its families and sizes,
        ``info["probabilities"]`` the chance of each corpus per episode.
    """
    from metanlp.corpora import CorpusError, load_corpus
    from metanlp.corpora.bigbench import fixed_label_families

    tasks = tasks or GeneralTasks()
    k, q = tasks.k_shot, tasks.q_query
    labelled: dict[str, dict[str, EpisodeSampler]] = defaultdict(dict)
    texts: dict[str, list[str]] = defaultdict(list)

    tweets = load_corpus("tweets", data_dir)
    for domain in TWEET_DOMAINS:
        labelled["tweets"][domain] = ClassificationSampler(
            tweets, n_way=None, k_shot=k, q_query=q, group_by="domain", groups=[domain],
            drop_small=True, name="tweets", collator=collator,
        )  # fmt: skip
    held = set(HELD_OUT_TWEET_DOMAINS)
    texts["tweets"] = [
        t for t, d in zip(tweets["text"], tweets["domain"], strict=True) if d not in held
    ]
    wnut = load_corpus("wnut16", data_dir)
    texts["wnut16"] = [" ".join(words) for words in wnut["tokens"]]

    skipped_bigbench: str | None = None
    if tasks.bigbench:
        try:
            families = fixed_label_families(data_dir)
        except CorpusError as err:
            skipped_bigbench = str(err)
            families = {}
            logger.warning("General tasks without BIG-bench: %s", err)
        for task in sorted(families):
            if task in tasks.held_out_bigbench or task.split("/")[0] in tasks.held_out_bigbench:
                continue
            data = load_corpus(f"bigbench/{task}", data_dir)
            n_labels = len(data.features["label"].names)
            try:
                sampler = ClassificationSampler(
                    data, n_way=min(tasks.n_way, n_labels), k_shot=k, q_query=q,
                    drop_small=True, name=f"bigbench/{task}", collator=collator,
                )  # fmt: skip
            except ValueError as err:
                logger.info("BIG-bench task %s cannot make %d-shot episodes: %s", task, k, err)
                continue
            labelled[f"bigbench/{task.split('/')[0]}"][task] = sampler
            texts["bigbench"].extend(data["text"])

    def corpus_mixture(members: dict[str, EpisodeSampler]) -> EpisodeSampler:
        if len(members) == 1:
            return next(iter(members.values()))
        return MixtureSampler(members, seed=seed, collator=collator)

    parts: dict[str, MixtureSampler] = {}
    info: dict[str, Any] = {"tasks": tasks.to_dict(), "families": {}, "probabilities": {}}
    if tasks.mode in ("hybrid", "labelled"):
        corpora = {name: corpus_mixture(m) for name, m in sorted(labelled.items())}
        parts["labelled"] = MixtureSampler(
            corpora, weights="size", temperature=tasks.temperature, seed=seed, collator=collator
        )
        for name, members in sorted(labelled.items()):
            info["families"][name] = {f: int(s.num_examples) for f, s in members.items()}
    if tasks.mode in ("hybrid", "smlmt"):
        smlmt = {}
        for name, corpus_texts in sorted(texts.items()):
            source = SMLMTSource(corpus_texts, collator.tokenizer, name=name, **tasks.smlmt_options)
            smlmt[f"smlmt:{name}"] = SMLMTSampler(
                source, n_way=tasks.n_way, k_shot=k, q_query=q, collator=collator
            )
            info["families"][f"smlmt:{name}"] = {
                "sentences": len(source.sentences), "words": len(source.label_names),
            }  # fmt: skip
        parts["smlmt"] = MixtureSampler(
            smlmt, weights="size", temperature=tasks.temperature, seed=seed, collator=collator
        )
    if len(parts) == 2:
        share = {"smlmt": tasks.smlmt_share, "labelled": 1.0 - tasks.smlmt_share}
        sampler = MixtureSampler(parts, weights=share, seed=seed, collator=collator)
    else:
        share = {next(iter(parts)): 1.0}
        sampler = MixtureSampler(parts, seed=seed, collator=collator)
    for part, mix in parts.items():
        for name, p in zip(mix.names, mix.probs, strict=True):
            info["probabilities"][name] = round(float(p) * share[part], 4)
    info["held_out"] = [*HELD_OUT, *(f"tweets/domain={d}" for d in HELD_OUT_TWEET_DOMAINS)]
    info["held_out"] += [
        f"bigbench/{t}" for t in tasks.held_out_bigbench if f"bigbench/{t}" not in info["held_out"]
    ]
    if skipped_bigbench:
        info["bigbench_missing"] = skipped_bigbench
    return sampler, info
