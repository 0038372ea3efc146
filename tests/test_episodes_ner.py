"""NER episodes: Few-NERD K~2K greedy sampling (strict / relaxed), tags, sub-token alignment.

Runs on the real WNUT-16 corpus and tiny synthetic datasets, with the real MiniLM tokenizer.
Mention counts are recomputed here from the raw IOB2 tags, independently of the sampler.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from transformers import AutoTokenizer

from metanlp.corpora import load_corpus
from metanlp.episodes import (
    EpisodeSamplingError,
    NERSampler,
    NERSource,
    cross_dataset_types,
    episode_word_tags,
    load_episodes,
    save_episodes,
    split_names,
    word_predictions,
)
from metanlp.models import default_model_path


@pytest.fixture(scope="module")
def wnut(data_dir) -> Dataset:
    """The default corpus, built by conftest's ``data_dir`` fixture if it was missing."""
    return load_corpus("wnut16", data_dir)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def raw_tags(dataset: Dataset, row: int) -> list[str]:
    names = dataset.features["ner_tags"].feature.names
    return [names[t] for t in dataset[row]["ner_tags"]]


def mentions(tags: list[str]) -> Counter:
    """Reference mention count: a B- tag, or an I- tag not continuing its type, starts one."""
    counts: Counter = Counter()
    previous = "O"
    for tag in tags:
        if tag.startswith("B-") or (tag.startswith("I-") and previous[2:] != tag[2:]):
            counts[tag[2:]] += 1
        previous = tag
    return counts


def expected_targets(tags: list[str], types: list[str], scheme: str) -> list[str]:
    out = []
    for tag in tags:
        if tag == "O" or tag[2:] not in types:
            out.append("O")
        else:
            out.append(tag[2:] if scheme == "io" else tag)
    return out


def synthetic_ner(sentences: list[list[tuple[str, str]]]) -> Dataset:
    names = ["O", "B-a", "I-a", "B-b", "I-b", "B-c", "I-c"]
    features = Features(
        {"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))}
    )
    return Dataset.from_dict(
        {
            "tokens": [[w for w, _ in s] for s in sentences],
            "ner_tags": [[names.index(t) for _, t in s] for s in sentences],
        },
        features=features,
    )


@pytest.mark.parametrize(
    ("mode", "scheme", "n_way", "k_shot", "q_query"),
    [("strict", "io", 3, 2, 1), ("relaxed", "iob2", 5, 1, 2), ("strict", "iob2", 4, 3, 3)],
    ids=["strict-io-3w2s", "relaxed-iob2-5w1s", "strict-iob2-4w3s"],
)
def test_few_nerd_invariants_on_wnut(wnut, tokenizer, mode, scheme, n_way, k_shot, q_query):
    sampler = NERSampler(
        wnut, n_way=n_way, k_shot=k_shot, q_query=q_query, mode=mode, scheme=scheme,
        seed=11, tokenizer=tokenizer, max_length=64, name="wnut16",
    )  # fmt: skip
    positions: dict[str, set[int]] = {}
    for i in range(25):
        episode = sampler.episode(i)
        spec = episode.spec
        types = episode.label_names
        assert (
            episode.kind == "ner"
            and spec.mode == mode
            and episode.n_way == n_way == len(set(types))
        )
        assert not set(spec.support_rows) & set(spec.query_rows)
        support_texts = {tuple(wnut[r]["tokens"]) for r in spec.support_rows}
        assert not support_texts & {tuple(wnut[r]["tokens"]) for r in spec.query_rows}
        assert (
            episode.num_labels
            == len(episode.tag_names)
            == (n_way + 1 if scheme == "io" else 2 * n_way + 1)
        )
        for rows, k, targets in (
            (spec.support_rows, k_shot, episode.support_targets),
            (spec.query_rows, q_query, episode.query_targets),
        ):
            total: Counter = Counter()
            for row, target in zip(rows, targets, strict=True):
                tags = raw_tags(wnut, row)
                found = mentions(tags)
                assert set(found) & set(types), "rule (c): every sentence mentions a target"
                if mode == "strict":
                    assert set(found) <= set(types), f"rule (a) broken by row {row}: {found}"
                total.update({t: n for t, n in found.items() if t in types})
                assert target == expected_targets(tags, types, scheme)
            assert all(k <= total[t] <= 2 * k for t in types), (total, k)
        for label, name in enumerate(types):
            positions.setdefault(name, set()).add(label)
    assert sum(len(p) > 1 for p in positions.values()) >= len(positions) - 1  # labels permuted


def test_subtoken_alignment_matches_tokenizer_word_ids(wnut, tokenizer):
    sampler = NERSampler(
        wnut,
        n_way=4,
        k_shot=2,
        mode="relaxed",
        scheme="iob2",
        seed=3,
        tokenizer=tokenizer,
        max_length=40,
    )
    for i in range(5):
        episode = sampler.episode(i)
        for split in ("support", "query"):
            batch = getattr(episode, split)
            for b, words in enumerate(getattr(episode, f"{split}_inputs")):
                enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=40)
                word_ids = enc.word_ids()
                stored = getattr(episode, f"{split}_word_ids")[b]
                assert stored[: len(word_ids)] == word_ids and set(stored[len(word_ids) :]) <= {
                    None
                }
                assert batch["input_ids"][b, : len(word_ids)].tolist() == enc["input_ids"]
                targets = getattr(episode, f"{split}_targets")[b]
                expected, previous = [], None
                for w in word_ids:
                    first = w is not None and w != previous
                    expected.append(episode.tag_names.index(targets[w]) if first else -100)
                    previous = w
                expected += [-100] * (batch["labels"].shape[1] - len(expected))
                assert batch["labels"][b].tolist() == expected


def test_word_level_predictions_round_trip(wnut, tokenizer):
    sampler = NERSampler(
        wnut, n_way=3, k_shot=2, mode="relaxed", seed=5, tokenizer=tokenizer, max_length=16
    )
    episode = sampler.episode(0)
    labels = episode.query["labels"]
    # Noise on ignored positions must not matter: only the first sub-token of a word counts.
    noise = torch.randint(
        0, len(episode.tag_names), labels.shape, generator=torch.Generator().manual_seed(0)
    )
    predictions = torch.where(labels == -100, noise, labels)
    logits = torch.nn.functional.one_hot(predictions, len(episode.tag_names)).float()
    decoded = episode_word_tags(episode, logits, "query")
    truncated = 0
    for b, (words, targets) in enumerate(
        zip(episode.query_inputs, episode.query_targets, strict=True)
    ):
        assert len(decoded[b]) == len(words)
        kept = {w for w in episode.query_word_ids[b] if w is not None}
        truncated += len(words) - len(kept)
        # Words cut by max_length=16 come back as O; every other word gets its own tag.
        assert decoded[b] == [t if w in kept else "O" for w, t in enumerate(targets)]
    assert truncated > 0  # the case is really exercised
    assert word_predictions([7, 1, 2, 2, 7], [None, 0, 1, 1, None], n_words=3) == [1, 2, 0]


def test_impossible_strict_episode_names_the_type(tokenizer):
    # 'c' only ever occurs beside 'b': with targets {a, c}, rule (a) rejects every 'c' sentence.
    sentences = [[("x", "B-a"), ("y", "O")]] * 6 + [[("u", "B-c"), ("v", "B-b")]] * 6
    sentences = [[(f"{w}{i}", t) for w, t in s] for i, s in enumerate(sentences)]
    data = synthetic_ner(sentences)
    strict = NERSampler(data, n_way=2, k_shot=1, types=["a", "c"], mode="strict", attempts=5)
    with pytest.raises(
        EpisodeSamplingError, match=r"type 'c' ran out in 5 of them.*mode='relaxed'"
    ):
        strict.spec(0)
    relaxed = NERSampler(
        data, n_way=2, k_shot=1, types=["a", "c"], mode="relaxed", tokenizer=tokenizer
    )
    episode = relaxed.episode(0)
    assert all("b" not in t for targets in episode.support_targets for t in targets)  # 'b' became O
    with pytest.raises(EpisodeSamplingError, match=r"'a' has 6 mentions .* need at least 8"):
        NERSampler(data, n_way=2, k_shot=4, q_query=4, types=["a", "c"])


def test_impossible_on_wnut_is_bounded_and_named(wnut):
    sampler = NERSampler(wnut, n_way=10, k_shot=15, q_query=15, mode="strict", attempts=3)
    with pytest.raises(EpisodeSamplingError, match=r"type '[a-z-]+' ran out"):
        sampler.spec(0)


def test_intra_and_cross_type_splits(wnut):
    source = NERSource(wnut, name="wnut16")
    split = split_names(source.types, fractions=(0.5, 0.2, 0.3), seed=0)
    assert sorted(sum(split.values(), [])) == sorted(source.types)
    train = NERSampler(source, n_way=3, k_shot=1, types=split["train"], mode="relaxed")
    assert {t for i in range(20) for t in train.spec(i).label_names} <= set(split["train"])
    other = synthetic_ner([[("Ann", "B-a"), ("met", "O"), ("Bob", "B-b")]] * 4)
    other_source = NERSource(other, name="toy")
    cross = cross_dataset_types(other_source, source)
    assert cross == {"train": ["a", "b", "c"], "test": source.types}
    with pytest.raises(ValueError, match="nothing is left"):
        cross_dataset_types(source, source)


def test_ner_determinism_shards_and_file_round_trip(wnut, tokenizer, tmp_path):
    def make(**kw) -> NERSampler:
        return NERSampler(wnut, n_way=3, k_shot=1, seed=9, mode="strict", name="wnut16", **kw)

    single = make()
    stream = [single.next_spec() for _ in range(6)]
    shards = [make(rank=r, world_size=2) for r in range(2)]
    drawn = [s.next_spec() for _ in range(3) for s in shards]
    assert sorted(drawn, key=lambda s: s.index) == stream
    sampler = make(tokenizer=tokenizer, max_length=32)
    path = save_episodes(
        tmp_path / "ner.json", sampler.specs(3), sampler, metadata={"max_length": 32}
    )
    for original, again in zip(
        (sampler.episode(i) for i in range(3)),
        load_episodes(path, wnut, tokenizer=tokenizer),
        strict=True,
    ):
        assert original.tag_names == again.tag_names
        assert original.query_word_ids == again.query_word_ids
        for split in ("support", "query"):
            a, b = getattr(original, split), getattr(again, split)
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_ner_schema_errors():
    with pytest.raises(TypeError, match="sequence of ClassLabel"):
        NERSampler(Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]}))
    features = Features(
        {"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=["O", "X-a"]))}
    )
    with pytest.raises(ValueError, match="neither 'O' nor 'B-<type>'"):
        NERSampler(Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[1]]}, features=features))
    data = synthetic_ner([[("x", "B-a"), ("y", "B-b"), ("z", "B-c")]] * 4)
    with pytest.raises(ValueError, match="n_way=4 but 3 entity types"):
        NERSampler(data, n_way=4)
    with pytest.raises(ValueError, match=r"Unknown entity types \['d'\]"):
        NERSampler(data, n_way=1, types=["d"])


def test_entity_windows_cover_every_mention():
    from metanlp.episodes.tags import entity_windows

    assert entity_windows([1, 1, 1], [0, 1, 0], budget=5) == [(0, 3)]  # fits: untouched
    assert entity_windows([1, 1, 1, 1, 1], [0, 0, 0, 0, 2], budget=3) == [(0, 3), (4, 5)]
    # Words with no mention between windows are dropped; every labelled word is covered.
    lengths, labels = [2, 1, 1, 3, 1, 1, 2, 1], [1, 0, 0, 2, 2, 0, 0, 3]
    windows = entity_windows(lengths, labels, budget=4)
    assert windows == [(0, 3), (3, 5), (7, 8)]
    covered = {i for a, b in windows for i in range(a, b)}
    assert all(i in covered for i, t in enumerate(labels) if t)
    assert all(sum(lengths[a:b]) <= 4 for a, b in windows)
    assert entity_windows([4, 1], [1, 0], budget=2) == [(0, 1)]  # an over-long word is kept


def test_long_support_sentences_keep_their_mentions(data_dir):
    """At a max_length far below the sentences' length, every support type keeps its tokens
    (plain prefix truncation drops some), and the kept words and tags stay aligned."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import NERSampler
    from metanlp.models import load_encoder

    tokenizer = load_encoder().tokenizer
    wnut = load_corpus("wnut16", data_dir)
    sampler = NERSampler(wnut, n_way=5, k_shot=1, q_query=1, mode="relaxed", seed=3,
                         name="wnut16", tokenizer=tokenizer, max_length=12)  # fmt: skip
    cut = 0
    for index in range(10):
        episode = sampler.episode(index)
        labels = episode.support["labels"]
        counts = torch.bincount(labels[labels >= 0], minlength=episode.num_labels)
        assert (counts[1:] > 0).all(), (index, counts.tolist())
        rows = episode.spec.support_rows
        for words, tags in zip(episode.support_inputs, episode.support_targets, strict=True):
            row = next(r for r in rows if _contains(list(wnut[r]["tokens"]), words))
            full = list(wnut[row]["tokens"])
            cut += len(words) < len(full)
            start = next(i for i in range(len(full)) if full[i : i + len(words)] == words)
            assert len(tags) == len(words) and start + len(words) <= len(full)
    assert cut > 0  # the test did exercise the windows


def _contains(full: list[str], part: list[str]) -> bool:
    return any(full[i : i + len(part)] == part for i in range(len(full) - len(part) + 1))


def test_adapt_encoding_splits_long_support_sentences():
    """`MetaLearner.adapt`'s NER encoding: a mention past max_length still gets its tokens."""
    from metanlp.inputs import encode_ner

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    words = ["Paris"] + ["the"] * 30 + ["Google", "rocks"]
    tags = [1] + [0] * 30 + [2, 0]
    batch, word_ids = encode_ner(tokenizer, [words, ["hi", "Bob"]], [tags, [0, 3]], max_length=16)
    assert batch["input_ids"].shape[1] <= 16
    assert sorted(set(batch["labels"][batch["labels"] >= 0].tolist())) == [0, 1, 2, 3]
    assert len(word_ids) == 3  # the long sentence became two windows, the short one stayed
