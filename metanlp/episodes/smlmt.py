"""Self-supervised meta-training tasks from unlabelled text (SMLMT; Bansal et al., EMNLP 2020).

An SMLMT episode is an N-way K-shot classification task made from plain sentences: pick N words,
take K + Q sentences containing each, replace the word by the tokenizer's mask token, and label
each sentence by which word was masked. Any text column gives an unbounded supply of tasks, so
the learner meets many more task shapes than the labelled corpora offer.

What `SMLMTSource` does once, at construction:

1. splits long texts into sentences and keeps those of ``min_words..max_words`` words
   (duplicates dropped);
2. counts, for every lower-cased alphabetic word, the sentences it occurs in;
3. keeps the *tokenizer-aware* vocabulary: words of at least 3 letters that the tokenizer keeps
   whole (one sub-token, so masking one word hides one token), that are not stop words, and that
   occur in at least ``min_sentences`` sentences; sorted by that count, the ``skip_top`` most
   frequent are dropped (too generic) and the next ``vocab_size`` form the band;
4. records at most ``max_sentences_per_word`` sentences per word (a fixed, seed-independent
   choice), each one a *row*: (sentence, word).

`SMLMTSampler` then draws episodes like any other sampler (a pure function of ``(seed, index)``):
N words of the band, and for each K + Q of its sentences that contain none of the episode's other
words and are not used by another class, so every masked sentence has exactly one right label.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from metanlp.episodes.classification import classification_spec
from metanlp.episodes.sampler import EpisodeSampler
from metanlp.episodes.sources import _fingerprint
from metanlp.episodes.types import EpisodeSamplingError, EpisodeSpec

WORD = re.compile(r"[A-Za-z]+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


def stop_words() -> frozenset[str]:
    """English stop words (scikit-learn's list, 318 words) plus a few tweet fillers."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {"http", "https", "amp", "rt", "via", "don", "didn"}


def split_sentences(text: str, min_words: int, max_words: int) -> list[str]:
    """``text`` itself when it has ``min_words..max_words`` words, else its sentences that do."""
    text = " ".join(str(text).split())
    parts = [text] if len(text.split()) <= max_words else SENTENCE_END.split(text)
    return [p for p in parts if min_words <= len(p.split()) <= max_words]


def mask_word(sentence: str, word: str, mask_token: str) -> str:
    """Every whole-word, case-insensitive occurrence of ``word`` replaced by ``mask_token``."""
    pattern = r"(?<![A-Za-z])" + re.escape(word) + r"(?![A-Za-z])"
    return re.sub(pattern, mask_token, sentence, flags=re.IGNORECASE)


class _MaskedTexts(Sequence):
    """Row ``r`` -> its sentence with its word masked, built on demand (rows can be millions)."""

    def __init__(self, source: SMLMTSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source.row_sentence)

    def __getitem__(self, row):  # type: ignore[override]
        s = self.source
        r = int(row)
        word = s.label_names[int(s.labels[r])]
        return mask_word(s.sentences[int(s.row_sentence[r])], word, s.mask_token)


class SMLMTSource:
    """Unlabelled sentences turned into (sentence, masked word) rows; see the module docstring.

    It looks like a `ClassificationSource` to the collator (``texts``, ``labels``,
    ``label_names``, ``fingerprint``): class ``i`` is the ``i``-th word of the band.

    Args:
        texts (`Iterable[str]` or `datasets.Dataset`): The unlabelled text (a dataset needs
            ``text_column``).
        tokenizer (`PreTrainedTokenizerBase`): Decides which words are whole tokens and gives
            the mask token.
        name (`str`, defaults to ``"text"``): Used as ``smlmt:<name>`` in episode and task names.
        text_column (`str`, defaults to ``"text"``): Column read from a dataset.
        min_sentences (`int`, defaults to 10): A word of the band occurs in at least this many
            sentences (an episode needs K + Q of them per word).
        skip_top (`int`, defaults to 50): Most frequent eligible words left out.
        vocab_size (`int`, defaults to 5000): Words in the band.
        max_sentences_per_word (`int`, defaults to 100): Sentences kept per word.
        min_words, max_words (`int`, defaults to 4 and 64): Sentence length limits, in words.

    Example:
        ```python
        >>> source = SMLMTSource(tweets, tokenizer, name="tweets")
        >>> len(source.label_names), source.texts[0]
        (2130, 'just landed in [MASK] and the weather is great')
        ```
    """

    kind = "classification"

    def __init__(
        self,
        texts: Iterable[str] | Dataset,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = "text",
        text_column: str = "text",
        min_sentences: int = 10,
        skip_top: int = 50,
        vocab_size: int = 5000,
        max_sentences_per_word: int = 100,
        min_words: int = 4,
        max_words: int = 64,
    ) -> None:
        if tokenizer.mask_token is None:
            raise ValueError(
                f"Tokenizer {tokenizer.name_or_path!r} has no mask token; SMLMT replaces words by "
                "it. Use a masked-language-model tokenizer (BERT, RoBERTa, MiniLM, ...)."
            )
        for key, value, low in [
            ("min_sentences", min_sentences, 2),
            ("skip_top", skip_top, 0),
            ("vocab_size", vocab_size, 2),
            ("max_sentences_per_word", max_sentences_per_word, 2),
            ("min_words", min_words, 1),
        ]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{key}={value!r}; it must be an int >= {low}.")
        if max_words < min_words:
            raise ValueError(f"max_words={max_words} < min_words={min_words}.")
        if isinstance(texts, Dataset):
            if text_column not in texts.column_names:
                raise ValueError(
                    f"Dataset {name!r} has no text column {text_column!r}; its columns are "
                    f"{texts.column_names}. Pass text_column=..."
                )
            texts = texts.with_format(None)[text_column][:]
        self.name = f"smlmt:{name}"
        self.mask_token = tokenizer.mask_token
        self.columns = {"text_column": text_column}
        seen: dict[str, None] = {}
        for text in texts:
            if isinstance(text, str):
                for sentence in split_sentences(text, min_words, max_words):
                    seen.setdefault(sentence, None)
        self.sentences: list[str] = list(seen)
        words_of = [frozenset(w.lower() for w in WORD.findall(s)) for s in self.sentences]
        counts = Counter(w for words in words_of for w in words)
        stops = stop_words()
        candidates = sorted(
            (w for w, c in counts.items() if c >= min_sentences and len(w) >= 3 and w not in stops),
            key=lambda w: (-counts[w], w),
        )
        whole = _whole_words(tokenizer, candidates)
        band = [w for w in candidates if w in whole][skip_top : skip_top + vocab_size]
        self.label_names: list[str] = band
        self.settings = {
            "min_sentences": min_sentences,
            "skip_top": skip_top,
            "vocab_size": vocab_size,
            "max_sentences_per_word": max_sentences_per_word,
            "min_words": min_words,
            "max_words": max_words,
        }
        index = {w: i for i, w in enumerate(band)}
        by_word: list[list[int]] = [[] for _ in band]
        self.sentence_words: list[frozenset[int]] = []
        for s, words in enumerate(words_of):
            ids = frozenset(index[w] for w in words if w in index)
            self.sentence_words.append(ids)
            for i in ids:
                by_word[i].append(s)
        choose = np.random.default_rng(0)  # fixed: the rows must not depend on the episode seed
        row_sentence, labels = [], []
        self._pools: dict[str, np.ndarray] = {}
        for i, sentences in enumerate(by_word):
            if len(sentences) > max_sentences_per_word:
                sentences = sorted(choose.choice(sentences, max_sentences_per_word, replace=False))
            start = len(row_sentence)
            row_sentence.extend(sentences)
            labels.extend([i] * len(sentences))
            self._pools[band[i]] = np.arange(start, len(row_sentence))
        self.row_sentence = np.asarray(row_sentence, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.texts = _MaskedTexts(self)
        self.fingerprint = _fingerprint(
            self.sentences, band, self.mask_token, sorted(self.settings.items())
        )

    def __len__(self) -> int:
        return len(self.row_sentence)

    def pools(self, group: str | None = None) -> dict[str, np.ndarray]:
        """Word -> its rows (one per kept sentence)."""
        if group is not None:
            raise ValueError(f"{self.name!r} has no groups.")
        return dict(self._pools)


def _whole_words(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> set[str]:
    """The words the tokenizer encodes as a single sub-token (as they appear mid-sentence)."""
    if not words:
        return set()
    encoded = tokenizer([f"a {w}" for w in words], add_special_tokens=False)["input_ids"]
    prefix = len(tokenizer("a", add_special_tokens=False)["input_ids"])
    return {w for w, ids in zip(words, encoded, strict=True) if len(ids) - prefix == 1}


class SMLMTSampler(EpisodeSampler):
    """N-way K-shot masked-word episodes from unlabelled text (see the module docstring).

    Args:
        source (`SMLMTSource`, `datasets.Dataset` or `Iterable[str]`): The text; a dataset or
            an iterable is turned into an `SMLMTSource` with ``source_kwargs``.
        n_way (`int`, defaults to 5), k_shot (`int`, defaults to 5), q_query (`int`,
            defaults to 5): Episode shape.
        name (`str`, *optional*): Source name when one is built here.
        source_kwargs (`dict`, *optional*): `SMLMTSource` arguments (``min_sentences``,
            ``skip_top``, ``vocab_size``, ...).
        **kwargs: `EpisodeSampler` arguments; a ``tokenizer`` (or ``collator``) is required.

    Example:
        ```python
        >>> sampler = SMLMTSampler(tweets, n_way=5, k_shot=5, q_query=5, tokenizer=tok, seed=0)
        >>> spec = sampler.spec(0)
        >>> spec.label_names     # the five masked words, in episode-label order
        ['flight', 'weather', 'music', 'delayed', 'phone']
        ```
    """

    MAX_TRIES = 50

    def __init__(
        self,
        source: SMLMTSource | Dataset | Iterable[str],
        *,
        n_way: int = 5,
        k_shot: int = 5,
        q_query: int = 5,
        name: str | None = None,
        source_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if self.collator is None and not isinstance(source, SMLMTSource):
            raise ValueError(
                "SMLMTSampler needs a tokenizer (tokenizer=... or collator=...): it chooses the "
                "whole-word vocabulary and the mask token."
            )
        if not isinstance(n_way, int) or n_way < 2 or k_shot < 1 or q_query < 0:
            raise ValueError(
                f"n_way={n_way}, k_shot={k_shot}, q_query={q_query}; need n_way >= 2, "
                "k_shot >= 1, q_query >= 0."
            )
        if not isinstance(source, SMLMTSource):
            source = SMLMTSource(
                source, self.collator.tokenizer, name=name or "text", **(source_kwargs or {})
            )
        self.source = source
        self.sources = {source.name: source}
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        need = k_shot + q_query
        pools = source.pools()
        self.words = [w for w in source.label_names if len(pools[w]) >= need]
        self._pools = {w: pools[w] for w in self.words}
        self._word_id = {w: i for i, w in enumerate(source.label_names)}
        if len(self.words) < n_way:
            raise ValueError(
                f"{source.name!r}: only {len(self.words)} words of its band occur in at least "
                f"K+Q = {need} sentences ({len(source.sentences)} sentences in all); an "
                f"{n_way}-way episode needs {n_way}. Give more text, lower K or Q or n_way, or "
                "lower min_sentences / skip_top."
            )

    @property
    def num_examples(self) -> int:
        """Rows available (used by `MixtureSampler`'s size-based weights)."""
        return int(sum(len(p) for p in self._pools.values()))

    def draw(self, rng: np.random.Generator, index: int) -> EpisodeSpec:
        need = self.k_shot + self.q_query
        src = self.source
        for _ in range(self.MAX_TRIES):
            picked = [self.words[i] for i in rng.choice(len(self.words), self.n_way, replace=False)]
            ids = {self._word_id[w] for w in picked}
            used: set[int] = set()
            support, query = [], []
            for word in picked:
                others = ids - {self._word_id[word]}
                rows = [
                    r
                    for r in self._pools[word].tolist()
                    if int(src.row_sentence[r]) not in used
                    and not (src.sentence_words[int(src.row_sentence[r])] & others)
                ]
                if len(rows) < need:
                    break
                chosen = rng.choice(rows, need, replace=False).tolist()
                used.update(int(src.row_sentence[r]) for r in chosen)
                support.extend(chosen[: self.k_shot])
                query.extend(chosen[self.k_shot :])
            else:
                return classification_spec(src, src.name, picked, support, query, rng,
                                           self.seed, index)  # fmt: skip
        raise EpisodeSamplingError(
            f"{src.name!r}: {self.MAX_TRIES} draws of {self.n_way} words found no set whose "
            f"words each have {need} sentences free of the others; the band is too small or "
            "its words co-occur too much. Give more text or lower K + Q."
        )
