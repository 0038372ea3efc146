"""Self-supervised (SMLMT) episodes and the temperature-weighted mixture of task families.

Runs on the real tweets and BBC corpora with the real MiniLM tokenizer; the error cases use a
few hand-written sentences.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from transformers import AutoTokenizer

from metanlp.corpora import load_corpus
from metanlp.episodes import (
    ClassificationSampler,
    EpisodeCollator,
    MixtureSampler,
    SMLMTSampler,
    SMLMTSource,
)
from metanlp.episodes.mixture import sampler_size
from metanlp.episodes.smlmt import mask_word, split_sentences, stop_words
from metanlp.models import default_model_path


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture(scope="module")
def tweet_source(data_dir, tokenizer):
    tweets = load_corpus("tweets", data_dir)
    return SMLMTSource(tweets.select(range(8000)), tokenizer, name="tweets")


def _has_word(text: str, word: str) -> bool:
    return word in {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def test_episodes_are_valid_masked_word_tasks(tweet_source, tokenizer):
    sampler = SMLMTSampler(tweet_source, n_way=5, k_shot=3, q_query=2, tokenizer=tokenizer, seed=3)
    mask = tokenizer.mask_token
    for spec in sampler.specs(40):
        assert len(set(spec.label_names)) == 5
        rows = spec.support_rows + spec.query_rows
        assert len(set(rows)) == len(rows) == 25
        sentences = [int(tweet_source.row_sentence[r]) for r in rows]
        assert len(set(sentences)) == 25, "a sentence serves one class of an episode only"
        per_class = Counter(
            tweet_source.label_names[tweet_source.labels[r]] for r in spec.support_rows
        )
        assert per_class == dict.fromkeys(spec.label_names, 3)  # balanced support
        per_class = Counter(
            tweet_source.label_names[tweet_source.labels[r]] for r in spec.query_rows
        )
        assert per_class == dict.fromkeys(spec.label_names, 2)  # balanced query
        for r in rows:
            word = tweet_source.label_names[tweet_source.labels[r]]
            text = tweet_source.texts[r]
            original = tweet_source.sentences[int(tweet_source.row_sentence[r])]
            assert _has_word(original, word) and mask in text
            assert not _has_word(text.replace(mask, " "), word), (word, text)
            # none of the episode's other words appears either: one right label per sentence
            assert not any(_has_word(text, w) for w in spec.label_names if w != word)
    episode = sampler.build(spec)
    assert sorted(episode.support["labels"].tolist()) == sorted([0, 1, 2, 3, 4] * 3)
    assert (episode.support["input_ids"] == tokenizer.mask_token_id).any(dim=1).all()


def test_vocabulary_is_a_band_of_whole_content_words(tweet_source, tokenizer):
    words = tweet_source.label_names
    stops = stop_words()
    assert len(words) > 300
    for w in words:
        assert len(w) >= 3 and w.isalpha() and w not in stops
        assert len(tokenizer.tokenize(w)) == 1, w
    pools = tweet_source.pools()
    counts = [len(pools[w]) for w in words]
    assert min(counts) >= tweet_source.settings["min_sentences"]
    assert max(counts) <= tweet_source.settings["max_sentences_per_word"]
    # skip_top: the most frequent eligible words are left out of the band
    fewer = SMLMTSource(tweet_source.sentences, tokenizer, name="t", skip_top=0)
    assert fewer.label_names[50 : 50 + 20] == words[:20]


def test_deterministic_by_seed_and_sampled_on_the_fly(tweet_source, tokenizer):
    a = SMLMTSampler(tweet_source, n_way=4, k_shot=2, q_query=2, seed=7, tokenizer=tokenizer)
    b = SMLMTSampler(tweet_source, n_way=4, k_shot=2, q_query=2, seed=7, tokenizer=tokenizer)
    c = SMLMTSampler(tweet_source, n_way=4, k_shot=2, q_query=2, seed=8, tokenizer=tokenizer)
    assert a.specs(10) == b.specs(10)
    assert a.specs(10) != c.specs(10)
    assert a.spec(123) == b.spec(123)  # any index, no pre-drawn list
    ea, eb = a.episode(5), b.episode(5)
    assert (ea.support["input_ids"] == eb.support["input_ids"]).all()
    # a rebuilt source has the same fingerprint and rows
    again = SMLMTSource(tweet_source.sentences, tokenizer, name="tweets")
    assert again.fingerprint == tweet_source.fingerprint
    assert [again.texts[i] for i in range(50)] == [tweet_source.texts[i] for i in range(50)]


def test_too_few_sentences_per_word_is_a_clear_error(tokenizer):
    texts = [
        "the river flooded the old town again today",
        "a river runs past the small town near here",
        "my garden has roses and a river view today",
    ] * 2
    with pytest.raises(ValueError, match=r"only \d+ words .* K\+Q = 10 sentences"):
        SMLMTSampler(texts, n_way=2, k_shot=5, q_query=5, tokenizer=tokenizer,
                     source_kwargs={"min_sentences": 2, "skip_top": 0})  # fmt: skip
    with pytest.raises(ValueError, match="needs a tokenizer"):
        SMLMTSampler(texts, n_way=2, k_shot=1, q_query=1)
    with pytest.raises(ValueError, match="min_sentences=1"):
        SMLMTSource(texts, tokenizer, min_sentences=1)


def test_helpers_split_and_mask():
    text = "First sentence is here. Second one follows now! Then " + "word " * 70
    assert split_sentences("one two three four", 4, 64) == ["one two three four"]
    assert split_sentences("too short", 4, 64) == []
    parts = split_sentences(text, 2, 64)
    assert parts == ["First sentence is here.", "Second one follows now!"]  # the long one dropped
    assert mask_word("Flight delayed; FLIGHTS and flight.", "flight", "[M]") == (
        "[M] delayed; FLIGHTS and [M]."
    )


def test_bbc_long_texts_become_sentences(data_dir, tokenizer):
    bbc = load_corpus("bbc_news", data_dir).select(range(300))
    source = SMLMTSource(bbc, tokenizer, name="bbc", min_sentences=8)
    assert len(source.sentences) > 3000
    assert all(4 <= len(s.split()) <= 64 for s in source.sentences)
    sampler = SMLMTSampler(source, n_way=5, k_shot=1, q_query=1, tokenizer=tokenizer)
    assert len(sampler.episode(0).query_targets) == 5


def test_mixture_temperature_over_family_sizes(data_dir, tweet_source, tokenizer):
    tweets = load_corpus("tweets", data_dir)
    collator = EpisodeCollator(tokenizer, max_length=32)
    families = {
        d: ClassificationSampler(
            tweets,
            n_way=None,
            k_shot=2,
            q_query=2,
            group_by="domain",
            groups=[d],
            name="tweets",
            collator=collator,
        )  # fmt: skip
        for d in ("airlines", "claritin")
    }
    sizes = np.asarray([sampler_size(s) for s in families.values()], dtype=float)
    assert sizes[0] > 5 * sizes[1]  # airlines 14.4k rows, claritin 1.7k
    for temperature, expected in [(1.0, sizes / sizes.sum()), (1e6, np.array([0.5, 0.5]))]:
        mix = MixtureSampler(families, weights="size", temperature=temperature, seed=0)
        assert np.allclose(mix.probs, expected, atol=1e-5)
    sqrt = MixtureSampler(families, weights="size", temperature=2.0, seed=0)
    assert np.allclose(sqrt.probs, np.sqrt(sizes) / np.sqrt(sizes).sum())
    share = np.mean([s.task.endswith("airlines") for s in sqrt.specs(400)])
    assert abs(share - sqrt.probs[0]) < 0.07
    # a hybrid of self-supervised and labelled families, nested
    smlmt = SMLMTSampler(tweet_source, n_way=3, k_shot=2, q_query=2, collator=collator)
    hybrid = MixtureSampler({"smlmt": smlmt, "labelled": sqrt}, weights={"smlmt": 1, "labelled": 1},
                            seed=1, collator=collator)  # fmt: skip
    specs = hybrid.specs(60)
    kinds = Counter(s.dataset for s in specs)
    assert kinds["smlmt:tweets"] > 15 and kinds["tweets"] > 15
    assert hybrid.build(specs[0]).support["labels"].numel() > 0
    with pytest.raises(ValueError, match="temperature"):
        MixtureSampler(families, weights="size", temperature=0)
    with pytest.raises(ValueError, match="'sizes'"):
        MixtureSampler(families, weights="sizes")
