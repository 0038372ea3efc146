"""Classification episodes: invariants over many sampled episodes, determinism, sharding, files.

Runs on the real corpora (bbc_news, tweets by domain) and on tiny synthetic datasets, with the
real MiniLM tokenizer. NER lives in test_episodes_ner.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value
from transformers import AutoTokenizer, BertConfig, BertModel

from metanlp.corpora import load_corpus
from metanlp.episodes import (
    ClassificationSampler,
    ClassificationSource,
    EpisodeCollator,
    MixtureSampler,
    load_episode_specs,
    load_episodes,
    save_episodes,
    split_names,
)
from metanlp.models import default_model_path


def real_corpus(name: str, data_dir: Path) -> Dataset:
    """A default corpus, built by conftest's ``data_dir`` fixture if it was missing."""
    return load_corpus(name, data_dir)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def bbc(data_dir):
    return real_corpus("bbc_news", data_dir)


@pytest.fixture(scope="module")
def tweets(data_dir):
    return real_corpus("tweets", data_dir)


def synthetic(n_classes: int = 6, per_class: int = 12, texts=None) -> Dataset:
    names = [f"class{c}" for c in range(n_classes)]
    rows = [
        (c, f"{names[c]} example number {i} " + "word " * (i % 5))
        for c in range(n_classes)
        for i in range(per_class)
    ]
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    return Dataset.from_dict(
        {"text": texts or [t for _, t in rows], "label": [c for c, _ in rows]}, features=features
    )


def check_episode(episode, source: ClassificationSource, k: int, q: int, n: int) -> None:
    spec = episode.spec
    assert episode.n_way == n == len(set(episode.label_names))
    assert not set(spec.support_rows) & set(spec.query_rows)
    for split, rows, k_expected in (
        ("support", spec.support_rows, k),
        ("query", spec.query_rows, q),
    ):
        batch = getattr(episode, split)
        labels = batch["labels"].tolist()
        assert Counter(labels) == {i: k_expected for i in range(n)}
        # The label of every row is its class's position in label_names (the kept mapping).
        assert [episode.label_names[y] for y in labels] == [
            source.label_names[source.labels[r]] for r in rows
        ]
        assert labels == getattr(episode, f"{split}_targets")
        assert getattr(episode, f"{split}_inputs") == [source.texts[r] for r in rows]
        mask = batch["attention_mask"]
        assert batch["input_ids"].shape == mask.shape == batch["token_type_ids"].shape
        assert mask.sum(1).max() == mask.shape[1]  # padded to the longest of this episode


@pytest.mark.parametrize("which", ["synthetic", "bbc_news"])
def test_invariants_over_many_episodes(which, bbc, tokenizer):
    dataset = synthetic() if which == "synthetic" else bbc
    n, k, q = (4, 3, 2) if which == "synthetic" else (3, 4, 3)
    sampler = ClassificationSampler(
        dataset,
        n_way=n,
        k_shot=k,
        q_query=q,
        seed=1,
        tokenizer=tokenizer,
        max_length=48,
        name=which,
    )
    positions: dict[str, set[int]] = {}
    for i in range(40):
        episode = sampler.episode(i)
        check_episode(episode, sampler.source, k, q, n)
        assert episode.support["input_ids"].shape[1] <= 48
        for label, name in enumerate(episode.label_names):
            positions.setdefault(name, set()).add(label)
    # No class keeps a fixed head index: every class is seen under more than one label.
    assert all(len(p) > 1 for p in positions.values()), positions


def test_token_ids_match_the_tokenizer(bbc, tokenizer):
    sampler = ClassificationSampler(
        bbc, n_way=2, k_shot=2, q_query=1, tokenizer=tokenizer, max_length=32
    )
    episode = sampler.episode(0)
    for b, text in enumerate(episode.support_inputs):
        reference = tokenizer(text, truncation=True, max_length=32)["input_ids"]
        ids = episode.support["input_ids"][b][: len(reference)].tolist()
        assert ids == reference
        assert episode.support["attention_mask"][b].sum() == len(reference)


def test_tokenization_is_cached(bbc, tokenizer):
    sampler = ClassificationSampler(
        bbc, n_way=2, k_shot=2, q_query=2, tokenizer=tokenizer, max_length=32
    )
    first = sampler.episode(0)
    misses = sampler.collator.cache_info()["misses"]
    assert misses == 8
    again = sampler.episode(0)
    assert sampler.collator.cache_info() == {"hits": 8, "misses": 8, "size": 8}
    assert torch.equal(first.query["input_ids"], again.query["input_ids"])


def test_group_by_domain_tweets(tweets, tokenizer):
    sampler = ClassificationSampler(
        tweets,
        n_way=None,
        k_shot=2,
        q_query=2,
        group_by="domain",
        drop_small=True,
        seed=0,
        name="tweets",
    )
    source = sampler.source
    names = {t.name for t in sampler.tasks}
    assert "tweets/domain=airlines" in names
    seen = Counter()
    for i in range(30):
        spec = sampler.spec(i)
        domain = spec.task.split("=", 1)[1]
        seen[domain] += 1
        rows = spec.support_rows + spec.query_rows
        assert {source.groups[r] for r in rows} == {domain}
        # N = all of the domain's labels (3 sentiments in every domain kept).
        assert sorted(spec.label_names) == sorted(source.pools(domain))
        assert len(spec.support_rows) == 2 * spec.n_way
    assert len(seen) >= 4  # uniform over domains, so most appear in 30 draws
    # A split of the domains themselves: meta-test domains never appear in meta-training.
    split = split_names(
        source.group_values(), explicit={"train": ["airlines", "apple"], "test": ["claritin"]}
    )
    train = ClassificationSampler(
        source, n_way=2, k_shot=1, q_query=1, group_by="domain", groups=split["train"]
    )
    assert {train.spec(i).task for i in range(20)} <= {
        "tweets/domain=airlines",
        "tweets/domain=apple",
    }


def test_class_split_is_disjoint_and_seeded(bbc):
    names = bbc.features["label"].names
    split = split_names(names, fractions=(0.6, 0.2, 0.2), seed=3)
    assert split == split_names(names, fractions=(0.6, 0.2, 0.2), seed=3)
    assert sorted(sum(split.values(), [])) == sorted(names)
    assert [len(split[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    sampler = ClassificationSampler(bbc, n_way=2, k_shot=1, q_query=1, classes=split["train"])
    used = {c for i in range(30) for c in sampler.spec(i).label_names}
    assert used == set(split["train"])
    with pytest.raises(ValueError, match="both split"):
        split_names(names, explicit={"train": names[:3], "test": names[2:]})
    with pytest.raises(ValueError, match="unknown"):
        split_names(names, explicit={"train": ["nope"]})


def test_determinism_by_seed(tokenizer):
    data = synthetic()
    a = ClassificationSampler(data, n_way=3, k_shot=2, q_query=2, seed=7, tokenizer=tokenizer)
    b = ClassificationSampler(data, n_way=3, k_shot=2, q_query=2, seed=7, tokenizer=tokenizer)
    c = ClassificationSampler(data, n_way=3, k_shot=2, q_query=2, seed=8)
    assert a.specs(10) == b.specs(10)
    assert a.specs(10) != c.specs(10)
    ea, eb = a.episode(4), b.episode(4)
    for key in ea.support:
        assert torch.equal(ea.support[key], eb.support[key])
    # The spec of episode i does not depend on what was drawn before.
    assert a.spec(9) == b.specs(10)[9]


def test_rank_shards_are_distinct_and_union_is_single_stream():
    data = synthetic()
    single = ClassificationSampler(data, n_way=3, k_shot=2, q_query=1, seed=5)
    stream = [single.next_spec() for _ in range(12)]
    shards = []
    for rank in range(3):
        sampler = ClassificationSampler(
            data, n_way=3, k_shot=2, q_query=1, seed=5, rank=rank, world_size=3
        )
        shards.append([sampler.next_spec() for _ in range(4)])
    flat = [s for shard in shards for s in shard]
    assert sorted(s.index for s in flat) == list(range(12))
    assert len({(tuple(s.support_rows), tuple(s.label_names)) for s in flat}) == 12
    by_index = {s.index: s for s in flat}
    assert [by_index[i] for i in range(12)] == stream


def test_resume_from_state_dict():
    data = synthetic()
    uninterrupted = ClassificationSampler(
        data, n_way=2, k_shot=1, q_query=1, seed=2, rank=1, world_size=2
    )
    expected = [uninterrupted.next_spec() for _ in range(6)]
    first = ClassificationSampler(data, n_way=2, k_shot=1, q_query=1, seed=2, rank=1, world_size=2)
    got = [first.next_spec() for _ in range(3)]
    state = first.state_dict()
    resumed = ClassificationSampler(
        data, n_way=2, k_shot=1, q_query=1, seed=2, rank=1, world_size=2
    )
    resumed.load_state_dict(state)
    got += [resumed.next_spec() for _ in range(3)]
    assert got == expected
    other_seed = ClassificationSampler(
        data, n_way=2, k_shot=1, q_query=1, seed=3, rank=1, world_size=2
    )
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(state)


def test_save_load_round_trip_gives_identical_tensors(tmp_path, bbc, tokenizer):
    sampler = ClassificationSampler(
        bbc,
        n_way=3,
        k_shot=2,
        q_query=2,
        seed=0,
        tokenizer=tokenizer,
        max_length=40,
        name="bbc_news",
    )
    path = save_episodes(
        tmp_path / "eval.json", sampler.specs(5), sampler, metadata={"max_length": 40}
    )
    assert b"pickle" not in path.read_bytes() and path.read_text().startswith("{")
    specs, header = load_episode_specs(path)
    assert specs == sampler.specs(5) and header["metadata"]["max_length"] == 40
    reloaded = load_episodes(
        path, {"bbc_news": bbc}, tokenizer=AutoTokenizer.from_pretrained(default_model_path())
    )
    for original, again in zip((sampler.build(s) for s in specs), reloaded, strict=True):
        assert original.label_names == again.label_names and original.task == again.task
        for split in ("support", "query"):
            a, b = getattr(original, split), getattr(again, split)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Other data under the same name: refuse, naming the dataset and both fingerprints.
    changed = bbc.select(range(1, len(bbc)))
    with pytest.raises(ValueError, match="'bbc_news' does not match"):
        load_episodes(path, {"bbc_news": changed}, tokenizer=tokenizer)


def test_mixture_of_datasets_with_weights(bbc, tweets, tokenizer):
    collator = EpisodeCollator(tokenizer, max_length=32)
    a = ClassificationSampler(bbc, n_way=2, k_shot=1, q_query=1, name="bbc_news", collator=collator)
    b = ClassificationSampler(
        tweets, n_way=2, k_shot=1, q_query=1, name="tweets", collator=collator
    )
    mix = MixtureSampler({"bbc": a, "tweets": b}, weights={"bbc": 1, "tweets": 3}, seed=4)
    specs = mix.specs(400)
    share = np.mean([s.dataset == "tweets" for s in specs])
    assert 0.68 < share < 0.82  # 0.75 expected; 400 draws give sd ~0.02
    assert specs[:5] == MixtureSampler(
        {"bbc": a, "tweets": b}, weights={"bbc": 1, "tweets": 3}, seed=4
    ).specs(5)
    episodes = [mix.build(s) for s in specs[:4]]
    assert {e.task for e in episodes} <= {"bbc_news", "tweets"}
    only_bbc = MixtureSampler([a, b], weights=[1, 0], seed=0)
    assert {s.dataset for s in only_bbc.specs(20)} == {"bbc_news"}


def _bad(kind: str):
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    if kind == "few":
        return Dataset.from_dict(
            {"text": [f"t{i}" for i in range(12)], "label": [0] * 5 + [1] * 5 + [2] * 2},
            features=features,
        )
    if kind == "empty":
        return Dataset.from_dict({"text": ["x", "  ", "y"], "label": [0, 1, 2]}, features=features)
    if kind == "not_classlabel":
        return Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]})
    if kind == "no_label":
        return Dataset.from_dict({"text": ["x", "y"], "topic": [0, 1]})
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "kwargs", "error", "match"),
    [
        (
            "few",
            {"n_way": 2, "k_shot": 3, "q_query": 2},
            ValueError,
            r"Class 'c' .* has 2 examples; K\+Q = 3\+2 needs at least 5",
        ),
        (
            "few",
            {"n_way": 3, "k_shot": 3, "q_query": 2, "drop_small": True},
            ValueError,
            r"n_way=3 but only 2 of the 3 allowed classes",
        ),
        (
            "few",
            {"n_way": 2, "classes": ["a", "zebra"]},
            ValueError,
            r"Unknown classes \['zebra'\]",
        ),
        ("empty", {}, ValueError, r"1 empty or missing texts .*rows \[1\]"),
        ("not_classlabel", {}, TypeError, r"not a ClassLabel"),
        ("no_label", {}, ValueError, r"no label column 'label'"),
    ],
    ids=[
        "class-below-K+Q",
        "n-way-too-large",
        "unknown-class",
        "empty-text",
        "not-classlabel",
        "missing-label",
    ],
)
def test_bad_input_is_named(kind, kwargs, error, match):
    with pytest.raises(error, match=match):
        ClassificationSampler(_bad(kind), **{"k_shot": 1, "q_query": 1, **kwargs})


def test_tokenizer_model_mismatch_is_refused(tokenizer):
    # A tiny BERT whose embedding table is smaller than the MiniLM vocabulary.
    small = BertModel(
        BertConfig(
            vocab_size=1000,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=8,
        )
    )
    with pytest.raises(ValueError, match="Tokenizer/model mismatch"):
        ClassificationSampler(
            synthetic(), n_way=2, k_shot=1, q_query=1, tokenizer=tokenizer, model=small
        )
    with pytest.raises(ValueError, match="no tokenizer"):
        ClassificationSampler(synthetic(), n_way=2, k_shot=1, q_query=1).episode(0)


def test_query_free_episodes_and_moving(tokenizer):
    # Reptile draws no query set: the query tensors are empty but well-formed.
    sampler = ClassificationSampler(synthetic(), n_way=3, k_shot=2, q_query=0, tokenizer=tokenizer)
    episode = sampler.episode(0)
    assert episode.query["input_ids"].shape == (0, 0) and episode.query["labels"].numel() == 0
    assert Counter(episode.support["labels"].tolist()) == {0: 2, 1: 2, 2: 2}
    moved = episode.to("cpu")
    assert moved.support["input_ids"].device.type == "cpu" and moved.spec is episode.spec
    assert torch.equal(moved.support["labels"], episode.support["labels"])


def test_group_weights(tweets):
    source = ClassificationSource(tweets, name="tweets", group_column="domain")
    sampler = ClassificationSampler(
        source, n_way=2, k_shot=1, q_query=1, group_by="domain", groups=["airlines", "apple"],
        group_weights={"airlines": 0, "apple": 1},
    )  # fmt: skip
    assert {sampler.spec(i).task for i in range(20)} == {"tweets/domain=apple"}
    with pytest.raises(ValueError, match=r"unknown groups \['mars'\]"):
        ClassificationSampler(
            source, n_way=2, k_shot=1, q_query=1, group_by="domain", group_weights={"mars": 1}
        )
