"""Ragged batches in length-sorted chunks (`metanlp.models.length_chunks`): the same embeddings
and gradients as each text run alone, on the real MiniLM, through both the model's forward and
the layer-by-layer path over a cached frozen prefix (what the adaptation policy fine-tunes)."""

from __future__ import annotations

import pytest
import torch

import metanlp.models as models
from metanlp.meta.efficient import cache_frozen_prefix, layered_embed
from metanlp.models import FewShotModel, length_chunks

TEXTS = [
    "hi",
    "my card has not arrived yet and it has been two weeks since I ordered it, what can I do?",
    "top up failed",
    "why was I charged a fee for a transfer to my own account in another currency?",
    "lost card",
    "how long does a transfer take",
    "can I change my PIN at an ATM or only in the app",
    "refund please",
    "the exchange rate I got for my payment abroad looks wrong to me",
    "is there a limit",
]


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return mask


def test_chunks_cover_every_row_once_longest_first_within_the_budget():
    mask = _mask([3, 10, 1, 7, 7, 2, 4], 10)
    chunks = length_chunks(mask, tokens=14, min_saving=0.0)
    rows = torch.cat([r for r, _ in chunks]).tolist()
    assert sorted(rows) == list(range(7))
    lengths = [n for _, n in chunks]
    assert lengths == sorted(lengths, reverse=True)
    for r, n in chunks:
        assert mask[r, n:].sum() == 0  # nothing attended is cut
        assert mask[r, n - 1].any()  # the chunk's longest row ends at its last column
        assert len(r) * n <= max(n, 14)
    assert sum(len(r) * n for r, n in chunks) < mask.numel()


def test_whole_batch_when_chunks_would_not_save():
    assert length_chunks(torch.ones(8, 6, dtype=torch.long), tokens=6) is None  # no padding
    assert length_chunks(_mask([3, 10, 1, 7], 10).flip(1), tokens=10) is None  # left padding
    assert length_chunks(_mask([5], 10), tokens=1) is None  # one row
    seen = []

    def probe(mask: torch.Tensor) -> torch.Tensor:
        seen.append(length_chunks(mask, tokens=4, min_saving=0.0))
        return mask.sum()

    torch.func.vmap(probe)(torch.stack([_mask([3, 10, 1], 10)] * 2))
    assert seen == [None]  # values cannot be read under vmap: the batch runs whole


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(models, "LENGTH_CHUNK_TOKENS", 48)


def _each_alone(tokenizer, run) -> torch.Tensor:
    return torch.cat([run(tokenizer([t], return_tensors="pt")) for t in TEXTS])


def _grads(outputs: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    weights = torch.linspace(-1.0, 1.0, outputs.numel()).reshape(outputs.shape)
    return torch.autograd.grad((outputs * weights).sum(), params)


def test_minilm_forward_in_chunks_matches_each_text_alone(minilm_eager, small_chunks):
    model = FewShotModel(minilm_eager.model, max_ways=2).eval()
    batch = minilm_eager.tokenizer(TEXTS, return_tensors="pt", padding=True)
    chunks = length_chunks(batch["attention_mask"])
    assert chunks is not None and len(chunks) > 2
    params = [model.base_encoder.encoder.layer[i].attention.self.query.weight for i in (0, 5)]
    chunked = model.embed(**batch)
    alone = _each_alone(minilm_eager.tokenizer, lambda b: model.embed(**b))
    assert torch.allclose(chunked, alone, atol=1e-5)
    for g, ref in zip(_grads(chunked, params), _grads(alone, params), strict=True):
        assert torch.allclose(g, ref, atol=1e-5, rtol=1e-4)


def test_minilm_cached_prefix_and_top_layers_in_chunks_match_each_text_alone(
    minilm_eager, small_chunks
):
    model = FewShotModel(minilm_eager.model, max_ways=2).eval()
    tok = minilm_eager.tokenizer
    params = [model.base_encoder.encoder.layer[i].output.dense.weight for i in (4, 5)]

    def top(batch) -> torch.Tensor:
        return layered_embed(model, {}, cache_frozen_prefix(model, dict(batch), 4))

    chunked = top(tok(TEXTS, return_tensors="pt", padding=True))
    alone = _each_alone(tok, top)
    assert torch.allclose(chunked, alone, atol=1e-5)
    for g, ref in zip(_grads(chunked, params), _grads(alone, params), strict=True):
        assert torch.allclose(g, ref, atol=1e-5, rtol=1e-4)
