"""The folder a `MetaLearner` is saved to, and how it is read back (no pickle anywhere).

Layout written by `save_learner`::

    metanlp_config.json        LearnerConfig: base model, task, head, algorithm + its config, N/K
    adapter/                   PEFT format (adapter_config.json, adapter_model.safetensors) when
                               the meta-learned encoder tensors are LoRA/adapter tensors
    encoder/                   full encoder weights (config.json, model.safetensors) when encoder
                               weights themselves were meta-learned, or the base is a local folder
    head.safetensors           the linear head (head.weight, head.bias)
    inner_lrs.safetensors      learned inner learning rates (Meta-SGD, MAML++), when any
    tokenizer.json, ...        the tokenizer
    results.json               evaluation results shown in the card, when given
    README.md                  model card

Saving goes through `metanlp.files.write_folder` (fsynced, swapped in atomically) and refuses to
replace a folder that is not a learner unless asked. Loading checks every tensor file against the
model it rebuilds (missing, unexpected or mis-shaped tensors, NaN / infinity) and names the file
at fault.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from metanlp.files import (
    CorruptFileError,
    check_tensors,
    read_json,
    read_safetensors,
    recover_folder,
    write_folder,
)
from metanlp.meta.registry import algorithm_from_spec, check_registered
from metanlp.models import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_HUB_ID,
    HEAD_PARAMETER_NAMES,
    FewShotModel,
    check_max_length,
    check_max_length_setting,
    default_model_path,
    load_encoder,
    model_from_encoder,
    transformers_bars_off,
)
from metanlp.spec import LearnerSpec

CONFIG_NAME = "metanlp_config.json"
HEAD_NAME = "head.safetensors"
INNER_LRS_NAME = "inner_lrs.safetensors"
RESULTS_NAME = "results.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
ADAPTER_DIR = "adapter"
ENCODER_DIR = "encoder"
FORMAT = "metanlp-learner"
VERSION = 1
LEARNER_FILE_PATTERNS = (
    CONFIG_NAME,
    HEAD_NAME,
    INNER_LRS_NAME,
    RESULTS_NAME,
    "README.md",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    f"{ADAPTER_DIR}/adapter_config.json",
    f"{ADAPTER_DIR}/adapter_model.safetensors",
    f"{ADAPTER_DIR}/README.md",
    f"{ENCODER_DIR}/config.json",
    f"{ENCODER_DIR}/*.safetensors",
    f"{ENCODER_DIR}/model.safetensors.index.json",
)
"""The files of a learner folder: what is downloaded from a Hub repo holding one, and what
`metanlp.hub.push_folder` uploads (nothing else)."""
LEARNER_DIRS = (ADAPTER_DIR, ENCODER_DIR)
RELOAD_FIX = "save the learner again, or download it again."
PEFT_ADAPTS = ("lora", "adapter")
"""`LearnerSpec.adapt` values whose encoder tensors are PEFT ones, saved in ``adapter/``."""
_HUB_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass
class LearnerConfig(LearnerSpec):
    """What rebuilds a learner: a `LearnerSpec` (model and algorithm) plus where it starts from
    and how it adapts at test time.

    Args:
        base_model (`str`): Encoder the learner starts from (Hub id, or the packaged default).
        max_length (`int`, defaults to 128): Tokenizer truncation length.
        meta_trained (`bool`, defaults to False): Whether the weights were meta-trained.
        n_way, k_shot (`int`, *optional*): Episode shape of meta-training (for the card).
        datasets (`list[str]`): Meta-training data (for the card).
        training (`dict`, *optional*): The meta-training run's settings (learning rate,
            meta-batch, steps, schedule, seed, ...; `MetaLearner.from_trainer` records them),
            listed in the model card.
        finetune (`dict`, *optional*): Test-time fine-tuning after adaptation, as
            `metanlp.meta.finetune.FineTuneConfig` fields; ``None`` (default) adapts with the
            algorithm's inner loop only.
        policy (`dict`, *optional*): An adaptation policy (`metanlp.meta.policy.AdaptPolicy`
            fields): when set and no ``finetune`` is given (here or to `adapt`), every `adapt`
            chooses how to adapt by cross-validation on the support set (the frozen encoder's
            logistic regression, no adaptation, the algorithm's adaptation, fine-tuning). The
            general learner and a plain encoder's text classification set it.
        **spec: the `LearnerSpec` fields (``task``, ``pooling``, ``max_ways``, ``head_init``,
            ``adapt``, ``adapt_options``, ``algorithm``, ``algorithm_config``).
    """

    base_model: str
    max_length: int = 128
    meta_trained: bool = False
    n_way: int | None = None
    k_shot: int | None = None
    datasets: list[str] = field(default_factory=list)
    finetune: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    training: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        from metanlp.meta.finetune import FineTuneConfig
        from metanlp.meta.policy import AdaptPolicy

        super().__post_init__()
        check_registered(type(self).__name__, self.algorithm)
        ft = FineTuneConfig.coerce(self.finetune)
        self.finetune = None if ft is None else ft.to_dict()
        policy = AdaptPolicy.coerce(self.policy)
        self.policy = None if policy is None else policy.to_dict()
        check_max_length_setting(self.max_length, "LearnerConfig.max_length")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnerConfig:
        data = dict(data)
        if data.pop("format", FORMAT) != FORMAT or data.pop("version", VERSION) != VERSION:
            raise ValueError(f"Not a version-{VERSION} {FORMAT} config: {data}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"Unknown key(s) {unknown} in {CONFIG_NAME}; allowed: {sorted(known)}."
            )
        return cls(**data)


def canonical_base_model(name: str | os.PathLike | None) -> str:
    """The packaged default (``None``, ``"default"`` or its folder) becomes its Hub id."""
    if name is None or str(name) in (DEFAULT_MODEL, DEFAULT_MODEL_HUB_ID):
        return DEFAULT_MODEL_HUB_ID
    try:
        if Path(name).resolve() == default_model_path().resolve():
            return DEFAULT_MODEL_HUB_ID
    except Exception:  # the default package may be absent: then it cannot be that folder
        pass
    return str(name)


def _meta_learned_encoder_names(model: FewShotModel, outer_names: list[str]) -> tuple[set, set]:
    peft = set(model.peft_parameter_names)
    body = {n for n in outer_names if n not in HEAD_PARAMETER_NAMES}
    return body & peft, body - peft


def save_learner(
    folder: str | os.PathLike,
    algorithm: Any,
    config: LearnerConfig,
    card: str,
    results: list[dict[str, Any]] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a learner with `metanlp.files.write_folder`: an interrupted save never leaves a
    half-written learner, and a kill at any point leaves the previous one loadable.

    Raises:
        FileExistsError: `folder` is a file, or a non-empty folder that is not a learner, and
            ``overwrite`` is False.
    """
    folder = Path(folder)
    recover_folder(folder)
    check_save_target(folder, overwrite)
    model: FewShotModel = algorithm.model
    _, full = _meta_learned_encoder_names(model, list(algorithm.outer_names))
    local_base = not _is_hub_or_default(config.base_model)
    if full and model.peft_type is not None:
        raise ValueError(
            "Both PEFT tensors and plain encoder weights were meta-learned; metanlp saves either an "
            "adapter (PEFT format) or full encoder weights. Merge the adapter first, or meta-learn "
            "one of the two (outer_params)."
        )

    def write(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
        if model.peft_type is not None:
            with transformers_bars_off():
                model.encoder.save_pretrained(str(tmp / ADAPTER_DIR))
            # PEFT writes its template card ("[More Information Needed]", the local base path)
            # into our temporary folder; the learner's card is README.md at the top.
            (tmp / ADAPTER_DIR / "README.md").unlink(missing_ok=True)
            _patch_adapter_base(tmp / ADAPTER_DIR, config.base_model)
        # Un-meta-trained encoder tensors equal the base model's: the id is enough.
        if (full and config.meta_trained) or local_base:
            with transformers_bars_off():
                model.base_encoder.save_pretrained(str(tmp / ENCODER_DIR))
        head = {n: t.detach().cpu().contiguous() for n, t in model.head.state_dict().items()}
        save_file({f"head.{k}": v for k, v in head.items()}, str(tmp / HEAD_NAME))
        extras = {k: v.cpu().contiguous() for k, v in algorithm.state_dict().items()}
        if extras:
            save_file(extras, str(tmp / INNER_LRS_NAME))
        model.tokenizer.save_pretrained(str(tmp))
        if results:
            (tmp / RESULTS_NAME).write_text(json.dumps(_jsonable(results), indent=2), "utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")

    return write_folder(folder, write)


def check_save_target(
    folder: Path,
    overwrite: bool,
    *,
    ours: Callable[[Path], bool] | None = None,
    what: str = "metanlp learner",
) -> None:
    """Refuse to replace anything but nothing, an empty folder or a learner holding only its
    own files (or what ``ours`` recognises, called ``what`` in the message), unless
    ``overwrite``; never the current folder or one that holds it."""
    here = Path.cwd().resolve()
    if folder.resolve() == here or folder.resolve() in here.parents:
        raise ValueError(
            f"Cannot save a {what} to {str(folder)!r}: it is the current folder (or holds it), "
            "which a save would replace. Save into a subfolder, e.g. 'learner'."
        )
    if overwrite or not os.path.lexists(folder):
        return
    if not folder.is_dir() or folder.is_symlink():
        raise FileExistsError(
            f"{folder} is a {'link' if folder.is_symlink() else 'file'}, not a folder; saving "
            "there would replace it. Pick another path, or pass overwrite=True to replace it."
        )
    if ours is None and is_learner_folder(folder):
        foreign = foreign_entries(folder)
        if not foreign:
            return
        raise FileExistsError(
            f"{folder} holds a learner and {len(foreign)} other entries (e.g. {foreign[:3]}); "
            "saving there would delete them. Move them out, save elsewhere, or pass "
            "overwrite=True to replace the whole folder."
        )
    if ours is not None and ours(folder):
        return
    entries = sorted(p.name for p in folder.iterdir())
    if entries:
        raise FileExistsError(
            f"{folder} holds {len(entries)} entries that are not a {what} (e.g. "
            f"{entries[:3]}); saving there would delete them. Pick another or an empty folder, "
            "or pass overwrite=True to replace it."
        )


def _jsonable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from metanlp.evaluation import nan_to_none

    return nan_to_none(list(results))


def _patch_adapter_base(adapter_dir: Path, base_model: str) -> None:
    # PEFT records the local folder the encoder was loaded from; a machine path means nothing
    # elsewhere, so point it at the base model id instead.
    path = adapter_dir / "adapter_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def _is_hub_or_default(name: str) -> bool:
    return name == DEFAULT_MODEL_HUB_ID or not Path(name).exists()


def is_learner_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a learner to load (its ``metanlp_config.json``)."""
    return (Path(path) / CONFIG_NAME).is_file()


def is_learner_file(relative: str) -> bool:
    """Whether a path inside a learner folder (``"encoder/config.json"``) is one of the files
    `save_learner` writes (`LEARNER_FILE_PATTERNS`)."""
    parts = relative.split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] not in LEARNER_DIRS):
        return False
    return any(
        fnmatch.fnmatchcase(relative, p)
        for p in LEARNER_FILE_PATTERNS
        if p.count("/") == len(parts) - 1
    )


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """What a learner folder holds besides the learner's own files (sorted relative paths;
    a folder or link counts as one entry). Empty for a folder that holds a learner alone."""
    folder = Path(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name in LEARNER_DIRS and entry.is_dir() and not entry.is_symlink():
            found += [
                f"{entry.name}/{sub.name}"
                for sub in sorted(entry.iterdir())
                if sub.is_symlink()
                or not sub.is_file()
                or not is_learner_file(f"{entry.name}/{sub.name}")
            ]
        elif entry.is_symlink() or not entry.is_file() or not is_learner_file(entry.name):
            found.append(entry.name)
    return found


def load_learner_parts(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild ``(algorithm, config, results)`` from a folder written by `save_learner`.

    Every tensor file is checked against the model it goes into (no missing, extra or
    mis-shaped tensor, no NaN or infinity).

    Raises:
        FileNotFoundError: a file the learner needs is missing.
        CorruptFileError: a file is truncated, malformed or does not fit the config; the message
            names it.
    """
    folder = Path(folder)
    recover_folder(folder)
    config = _read_config(folder / CONFIG_NAME)
    encoder_path = folder / ENCODER_DIR if (folder / ENCODER_DIR).is_dir() else None
    if encoder_path is None:
        check_base_model(config.base_model, folder / CONFIG_NAME)
    adapter = folder / ADAPTER_DIR
    if config.adapt in PEFT_ADAPTS and not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{adapter / 'adapter_config.json'} is missing: {folder / CONFIG_NAME} says "
            f"adapt={config.adapt!r}, whose meta-learned tensors are saved in {ADAPTER_DIR}/. "
            f"Copy the whole learner folder, or {RELOAD_FIX}"
        )
    _check_tokenizer_files(folder)
    model = _build_for_load(config, encoder_path, adapter if adapter.is_dir() else None, folder)
    check_max_length(
        model.base_encoder,
        model.tokenizer,
        config.max_length,
        f"max_length in {folder / CONFIG_NAME}",
    )
    head_file = folder / HEAD_NAME
    head = read_safetensors(head_file, RELOAD_FIX)
    check_tensors(head, {f"head.{k}": v.shape for k, v in model.head.state_dict().items()},
                  head_file, RELOAD_FIX)  # fmt: skip
    with torch.no_grad():
        model.head.weight.copy_(head["head.weight"])
        model.head.bias.copy_(head["head.bias"])
    model.to(device)
    algorithm = algorithm_from_spec(config, model)
    extras = {k: v.shape for k, v in algorithm.state_dict().items()}
    lrs_file = folder / INNER_LRS_NAME
    if extras or lrs_file.exists():
        lrs = read_safetensors(lrs_file, RELOAD_FIX, device)
        optional = algorithm.optional_extras() - set(lrs)
        extras = {k: v for k, v in extras.items() if k not in optional}
        check_tensors(lrs, extras, lrs_file, RELOAD_FIX)
        algorithm.load_state_dict(lrs)
    algorithm.to(device)
    results = None
    if (folder / RESULTS_NAME).is_file():
        from metanlp.evaluation import load_results

        try:
            results = load_results(folder / RESULTS_NAME)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CorruptFileError(
                f"{folder / RESULTS_NAME} is not a metanlp results file ({type(err).__name__}: "
                f"{err}); delete it (it only feeds the model card) or {RELOAD_FIX}"
            ) from None
    return algorithm, config, results


def _read_config(path: Path) -> LearnerConfig:
    data = read_json(path, f"is the folder a metanlp learner? If so, {RELOAD_FIX}")
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    try:
        return LearnerConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise CorruptFileError(f"{path}: {err}") from None


def check_base_model(name: str, config_file: Path) -> None:
    """A learner without ``encoder/`` names its base model by Hub id: refuse anything else.

    A saved learner whose base is a local folder carries it in ``encoder/``, so a path here can
    only come from a crafted or foreign config, which must not point the loader at this
    machine's files.
    """
    if name == DEFAULT_MODEL_HUB_ID:
        return
    if not _HUB_ID.match(name) or os.path.lexists(name):
        raise CorruptFileError(
            f"{config_file} names base_model={name!r}, which is not a Hub id (user/name or name) "
            f"or is also a path on this machine; a learner without {ENCODER_DIR}/ must name its "
            "base encoder by Hub id. Fix base_model in the file, or load the encoder yourself "
            "(MetaLearner.from_pretrained(<encoder folder>)) if you trust it."
        )


def _check_tokenizer_files(folder: Path) -> None:
    """A learner's tokenizer files are there and ask for no code (before transformers reads
    them: without its vocabulary a tokenizer is rebuilt from its special tokens alone)."""
    from metanlp.models import refuse_remote_code

    for name in (TOKENIZER_FILE, TOKENIZER_CONFIG):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} is missing: without it the tokenizer would be rebuilt from its "
                f"special tokens alone and every text would encode to [UNK]; {RELOAD_FIX}"
            )
    data = read_json(folder / TOKENIZER_CONFIG, RELOAD_FIX)
    if not isinstance(data, dict):
        raise CorruptFileError(f"{folder / TOKENIZER_CONFIG} must hold a JSON object; {RELOAD_FIX}")
    refuse_remote_code(data, str(folder / TOKENIZER_CONFIG))


def _build_for_load(
    config: LearnerConfig, encoder_path: Path | None, adapter: Path | None, folder: Path
) -> FewShotModel:
    loaded = load_encoder(
        encoder_path if encoder_path is not None else config.base_model,
        strict=encoder_path is not None,
        tokenizer_path=folder,
    )
    if encoder_path is not None:
        bad = sorted(
            n for n, p in loaded.model.named_parameters() if not bool(torch.isfinite(p).all())
        )
        if bad:
            raise CorruptFileError(
                f"The encoder weights in {encoder_path} hold NaN or infinite values (e.g. "
                f"{bad[:3]}); {RELOAD_FIX}"
            )
    peft_config = None
    if adapter is not None:
        from peft import PeftConfig

        try:
            peft_config = PeftConfig.from_pretrained(str(adapter))
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise CorruptFileError(
                f"{adapter / 'adapter_config.json'} cannot be read ({type(err).__name__}: {err}); "
                f"{RELOAD_FIX}"
            ) from None
        peft_config.inference_mode = False  # FewShotModel finds the PEFT tensors by requires_grad
        peft_config.base_model_name_or_path = None  # the encoder is given; PEFT warns on a rename
    model = model_from_encoder(config, loaded, peft_config)
    if adapter is not None:
        _load_adapter(model, adapter / "adapter_model.safetensors")
    return model


def _load_adapter(model: FewShotModel, path: Path) -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    state = read_safetensors(path, RELOAD_FIX)
    expected = {k: v.shape for k, v in get_peft_model_state_dict(model.encoder).items()}
    check_tensors(state, expected, path, RELOAD_FIX)
    set_peft_model_state_dict(model.encoder, state)
