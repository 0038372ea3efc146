"""Turning an `EpisodeSpec` into tensors: cached tokenization, per-episode padding, NER alignment."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from metanlp.episodes.sources import ClassificationSource, NERSource
from metanlp.episodes.tags import (
    IGNORE_INDEX,
    align_word_labels,
    episode_tag_names,
    sentence_tags,
    support_windows,
)
from metanlp.episodes.types import Episode, EpisodeSpec
from metanlp.models import check_max_length, check_tokenizer_matches

Encoding = tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int | None, ...] | None]


class EpisodeCollator:
    """Tokenize and pad episodes, caching each row's encoding.

    The encoding of a row is cached per (dataset fingerprint, kind, row, ``max_length``) in an LRU
    of ``cache_size`` entries, so a long meta-training run tokenizes each text once. Padding is
    per episode: the support (and the query) is padded to its own longest sequence. An NER
    support sentence whose mentions pass ``max_length`` is split into windows that cover them
    all (`metanlp.episodes.tags.entity_windows`), so truncation never leaves a type without
    support tokens; the episode's ``support_inputs``/``support_targets`` hold the windows (then
    more rows than ``spec.support_rows``). Query sentences keep their prefix (words past it
    are predicted ``O``, and scored).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): The model's tokenizer; must be a fast tokenizer for NER.
        max_length (`int`, defaults to 128): Truncation length in sub-tokens, special tokens included.
        model (`PreTrainedModel`, *optional*): When given, the tokenizer is checked against the
            model's embedding table (a mismatch raises).
        cache_size (`int`, defaults to 200000): Rows kept in the tokenization cache.

    Example:
        ```python
        >>> collator = EpisodeCollator(load_encoder().tokenizer, max_length=64)
        >>> episode = collator(spec, source)
        >>> episode.support["input_ids"].shape
        torch.Size([25, 64])
        ```
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 128,
        *,
        model: PreTrainedModel | None = None,
        cache_size: int = 200_000,
    ) -> None:
        if max_length < 2:
            raise ValueError(
                f"max_length={max_length}; it must leave room for special tokens (>= 2)."
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(
                f"Tokenizer {tokenizer.name_or_path!r} has no pad token; set tokenizer.pad_token first."
            )
        if model is not None:
            check_tokenizer_matches(model, tokenizer, getattr(model, "name_or_path", "model"))
            check_max_length(model, tokenizer, max_length, "max_length")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, Encoding] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def cache_info(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._cache)}

    def __call__(self, spec: EpisodeSpec, source: ClassificationSource | NERSource) -> Episode:
        if spec.dataset != source.name or spec.fingerprint != source.fingerprint:
            raise ValueError(
                f"Episode {spec.task!r} was drawn from dataset {spec.dataset!r} (fingerprint "
                f"{spec.fingerprint}) but the data given is {source.name!r} (fingerprint "
                f"{source.fingerprint}): the rows would not be the same. Use the dataset the "
                "episodes were written for, or draw new episodes."
            )
        if spec.kind != source.kind:
            raise ValueError(f"Spec kind {spec.kind!r} does not match source kind {source.kind!r}.")
        if spec.kind == "classification":
            return self._classification(spec, source)  # type: ignore[arg-type]
        return self._ner(spec, source)  # type: ignore[arg-type]

    # -- tokenization with cache ---------------------------------------------------------------
    def _encode(self, source: Any, rows: list[int], words: bool) -> list[Encoding]:
        kind = "words" if words else "text"
        keys = [(source.fingerprint, kind, r, self.max_length) for r in rows]
        missing = sorted({k[2] for k in keys if k not in self._cache})
        self.misses += len(missing)
        self.hits += len(keys) - sum(1 for k in keys if k[2] in missing)
        if missing:
            inputs = [source.tokens[r] if words else source.texts[r] for r in missing]
            if words and not self.tokenizer.is_fast:
                raise ValueError("NER alignment needs a fast tokenizer (word_ids()); load one.")
            enc = self.tokenizer(
                inputs,
                is_split_into_words=words,
                truncation=True,
                max_length=self.max_length,
            )
            for b, r in enumerate(missing):
                key = (source.fingerprint, kind, r, self.max_length)
                self._cache[key] = _encoding(enc, b, words)
        out = []
        for k in keys:
            self._cache.move_to_end(k)
            out.append(self._cache[k])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def _support_windows(
        self,
        encodings: list[Encoding],
        words: list[list[str]],
        word_tags: list[list[str]],
        tag_index: dict[str, int],
    ) -> tuple[list[Encoding], list[list[str]], list[list[str]]]:
        """Split each support sentence whose mentions pass ``max_length`` into windows."""
        out: tuple[list, list, list] = ([], [], [])
        for enc, sentence, tags in zip(encodings, words, word_tags, strict=True):
            ids = [tag_index[t] for t in tags]
            kept = max((w for w in enc[2] if w is not None), default=-1) + 1
            if not any(ids[kept:]):
                parts = [(enc, sentence, tags)]
            else:
                windows = support_windows(self.tokenizer, sentence, ids, self.max_length)
                parts = [(self._encode_words(sentence[a:b]), sentence[a:b], tags[a:b])
                         for a, b in windows]  # fmt: skip
            for column, value in zip(out, zip(*parts, strict=True), strict=True):
                column.extend(value)
        return out

    def _encode_words(self, words: list[str]) -> Encoding:
        """One word list, uncached (a support sentence cut to the window of its mentions)."""
        enc = self.tokenizer([words], is_split_into_words=True, truncation=True,
                             max_length=self.max_length)  # fmt: skip
        return _encoding(enc, 0, True)

    def _pad(
        self, encodings: list[Encoding], labels: list[list[int]] | None = None
    ) -> tuple[dict[str, torch.Tensor], list[list[int | None]]]:
        if not encodings:  # an empty query set (e.g. Reptile needs none)
            empty = torch.zeros((0, 0), dtype=torch.long)
            batch = {"input_ids": empty, "attention_mask": empty.clone()}
            if "token_type_ids" in self.tokenizer.model_input_names:
                batch["token_type_ids"] = empty.clone()
            if labels is not None:
                batch["labels"] = empty.clone()
            return batch, []
        length = max(len(e[0]) for e in encodings)
        left = self.tokenizer.padding_side == "left"
        pad_type = getattr(self.tokenizer, "pad_token_type_id", 0)

        def pad(seq: list, value: Any) -> list:
            extra = [value] * (length - len(seq))
            return extra + list(seq) if left else list(seq) + extra

        batch = {
            "input_ids": torch.tensor([pad(e[0], self.tokenizer.pad_token_id) for e in encodings]),
            "attention_mask": torch.tensor([pad([1] * len(e[0]), 0) for e in encodings]),
        }
        if encodings[0][1] is not None:
            batch["token_type_ids"] = torch.tensor([pad(e[1], pad_type) for e in encodings])
        if labels is not None:
            batch["labels"] = torch.tensor([pad(lab, IGNORE_INDEX) for lab in labels])
        word_ids = [pad(e[2], None) for e in encodings] if encodings[0][2] is not None else []
        return batch, word_ids

    # -- the two kinds -------------------------------------------------------------------------
    def _classification(self, spec: EpisodeSpec, source: ClassificationSource) -> Episode:
        index = {name: i for i, name in enumerate(spec.label_names)}
        sets = {}
        for split, rows in (("support", spec.support_rows), ("query", spec.query_rows)):
            targets = [index[source.label_names[source.labels[r]]] for r in rows]
            batch, _ = self._pad(self._encode(source, rows, words=False))
            batch["labels"] = torch.tensor(targets, dtype=torch.long)
            sets[split] = (batch, [source.texts[r] for r in rows], targets)
        return Episode(
            support=sets["support"][0],
            query=sets["query"][0],
            n_way=spec.n_way,
            label_names=list(spec.label_names),
            kind="classification",
            task=spec.task,
            support_inputs=sets["support"][1],
            query_inputs=sets["query"][1],
            support_targets=sets["support"][2],
            query_targets=sets["query"][2],
            spec=spec,
        )

    def _ner(self, spec: EpisodeSpec, source: NERSource) -> Episode:
        tag_names = episode_tag_names(spec.label_names, spec.scheme or "io")
        tag_index = {t: i for i, t in enumerate(tag_names)}
        sets = {}
        for split, rows in (("support", spec.support_rows), ("query", spec.query_rows)):
            encodings = self._encode(source, rows, words=True)
            word_tags = [
                sentence_tags(
                    source.spans[r],
                    len(source.tokens[r]),
                    source.types,
                    spec.label_names,
                    spec.scheme or "io",
                )
                for r in rows
            ]
            words = [list(source.tokens[r]) for r in rows]
            if split == "support":  # keep every support mention that plain truncation would cut
                encodings, words, word_tags = self._support_windows(
                    encodings, words, word_tags, tag_index
                )
            labels = [
                align_word_labels(e[2], [tag_index[t] for t in tags])
                for e, tags in zip(encodings, word_tags, strict=True)
            ]
            batch, word_ids = self._pad(encodings, labels)
            sets[split] = (batch, words, word_tags, word_ids)
        return Episode(
            support=sets["support"][0],
            query=sets["query"][0],
            n_way=spec.n_way,
            label_names=list(spec.label_names),
            kind="ner",
            task=spec.task,
            support_inputs=sets["support"][1],
            query_inputs=sets["query"][1],
            support_targets=sets["support"][2],
            query_targets=sets["query"][2],
            support_word_ids=sets["support"][3],
            query_word_ids=sets["query"][3],
            tag_names=tag_names,
            spec=spec,
        )


def _encoding(enc: Any, b: int, words: bool) -> Encoding:
    """Row ``b`` of a batch tokenizer output as the cached tuple (ids, type ids, word ids)."""
    type_ids = enc.get("token_type_ids")
    return (
        tuple(enc["input_ids"][b]),
        tuple(type_ids[b]) if type_ids is not None else None,
        tuple(enc.word_ids(b)) if words else None,
    )
