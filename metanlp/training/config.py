"""`MetaTrainerConfig`: every setting of a meta-training run, validated, YAML in and JSON out.

The YAML files in ``metanlp/configs/`` mirror these dataclasses key for key; unknown keys are an
error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from metanlp.spec import LearnerSpec, check_choice, closest

MIXED_PRECISION_CHOICES = ("no", "bf16", "fp16", "auto")
SCHEDULE_CHOICES = ("constant", "linear", "cosine")
ATTN_CHOICES = ("auto", "eager", "sdpa")


def _check_positive(owner: str, key: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{owner}.{key}={value!r} must be a number {bound} and finite.")


def _check_int(owner: str, key: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{owner}.{key}={value!r} must be an integer >= {minimum}.")


@dataclass
class DataConfig:
    """Where episodes come from (built by ``metanlp.episodes``, never by the trainer).

    Args:
        train (`list[dict]`): Meta-training sources; each is a dict of keyword arguments for
            :func:`metanlp.episodes.build_sampler` (``dataset``, ``n_way``, ``k_shot``, ``q_query``,
            task family and class/group splits, ``weight``).
        val (`dict`): The meta-validation source, same keys; a fixed set of ``val_episodes``
            episodes is drawn from it once with ``val_seed``.
        max_length (`int`, defaults to 64): Truncation length of the tokenizer.
        seed (`int`, defaults to 0): Seed of the meta-training episode stream.
        val_seed (`int`, defaults to 1234): Seed of the fixed meta-validation episodes.
        val_episodes (`int`, defaults to 16): How many meta-validation episodes.
        data_dir (`str`, *optional*): Folder of the built corpora (defaults to ``$METANLP_DATA_DIR``).
    """

    train: list[dict[str, Any]] = field(default_factory=list)
    val: dict[str, Any] | None = None
    max_length: int = 64
    seed: int = 0
    val_seed: int = 1234
    val_episodes: int = 16
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.train, list) or not all(isinstance(s, dict) for s in self.train):
            raise ValueError(
                f"data.train={self.train!r} must be a list of source dicts (dataset, n_way, ...)."
            )
        if self.val is not None and not isinstance(self.val, dict):
            raise ValueError(
                f"data.val={self.val!r} must be a source dict (dataset, n_way, ...) or null."
            )
        _check_int("data", "max_length", self.max_length, 8)
        _check_int("data", "seed", self.seed, 0)
        _check_int("data", "val_seed", self.val_seed, 0)
        _check_int("data", "val_episodes", self.val_episodes, 1)


@dataclass
class OptimizerConfig:
    """Outer optimiser (AdamW) and its learning-rate schedule.

    Args:
        lr (`float`, defaults to 1e-3): Peak outer learning rate β.
        weight_decay (`float`, defaults to 0.0), betas (`list[float]`, defaults to [0.9, 0.999]),
        eps (`float`, defaults to 1e-8): AdamW settings.
        schedule (`str`, defaults to ``"cosine"``): ``"constant"``, ``"linear"`` or ``"cosine"`` decay
            after warm-up, reaching 0 at ``max_steps``.
        warmup_steps (`int`, defaults to 0): Linear warm-up from 0 to ``lr``.
        max_grad_norm (`float`, *optional*, defaults to 1.0): Clip the meta-gradient's global norm;
            ``null`` turns clipping off.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        _check_positive("optimizer", "lr", self.lr)
        _check_positive("optimizer", "weight_decay", self.weight_decay, allow_zero=True)
        _check_positive("optimizer", "eps", self.eps)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optimizer.betas={self.betas!r} must be two numbers in [0, 1).")
        self.betas = [float(b) for b in self.betas]
        check_choice("optimizer", "schedule", self.schedule, SCHEDULE_CHOICES)
        _check_int("optimizer", "warmup_steps", self.warmup_steps, 0)
        if self.max_grad_norm is not None:
            _check_positive("optimizer", "max_grad_norm", self.max_grad_norm)


@dataclass
class MetaTrainerConfig(LearnerSpec):
    """Settings of a meta-training run (see ``docs/training.md``): a `LearnerSpec` (``task``,
    ``pooling``, ``max_ways``, ``head_init``, ``adapt``, ``adapt_options``, ``algorithm``,
    ``algorithm_config``: the model and the algorithm) plus the run.

    Args:
        model (`str`, defaults to ``"default"``): Encoder name or path (``"default"``: packaged MiniLM).
        attn_implementation (`str`, defaults to ``"auto"``): ``"auto"`` lets the algorithm pick
            (eager for second order on CPU), or ``"eager"`` / ``"sdpa"``.
        data (`DataConfig`): Episode sources.
        meta_batch_size (`int`, defaults to 2): Tasks per meta-batch, over all processes (must be
            a multiple of the number of processes).
        gradient_accumulation_steps (`int`, defaults to 1): Meta-batches whose meta-gradients are
            averaged before one optimiser step (same result as a meta-batch that many times larger).
        max_steps (`int`, defaults to 100): Optimiser (meta) steps.
        steps_per_epoch (`int`, *optional*): Meta-steps per "epoch" for algorithms that anneal by
            epoch (MAML++); defaults to ``eval_every``.
        optimizer (`OptimizerConfig`): AdamW and its schedule.
        eval_every (`int`, defaults to 25): Meta-validate every this many steps (and at the end).
        keep_best (`bool`, defaults to True): Save the best meta-validation weights to ``best/``
            and load them back at the end.
        metric_for_best (`str`, defaults to ``"accuracy"``): Validation metric that picks the
            best weights and drives early stopping.
        greater_is_better (`bool`, *optional*): Whether a larger ``metric_for_best`` is better;
            by default False for a metric named ``*loss`` and True for any other.
        early_stopping_patience (`int`, *optional*): Stop after this many evaluations without
            improvement; ``null`` never stops early.
        mixed_precision (`str`, defaults to ``"no"``): ``"no"`` (fp32), ``"bf16"``, ``"fp16"``, or
            ``"auto"``: bf16 autocast where a matmul probe at start-up measures bf16 faster than
            fp32 on this device (`metanlp.training.precision`), else fp32; the trainer prints
            its choice. Weights and optimiser state stay fp32 in every mode.
        output_dir (`str`, defaults to ``"runs/meta"``): Checkpoints, logs, the learning curve.
            A folder that holds an earlier run's outputs is refused unless the run resumes it
            or ``overwrite_output_dir`` is set.
        overwrite_output_dir (`bool`, defaults to False): Start a new run in an ``output_dir``
            that holds an earlier run: its checkpoints, ``best/``, logs and curve are deleted
            first (nothing else in the folder is touched).
        save_every (`int`, *optional*): Checkpoint every this many steps (and at the end).
        save_total_limit (`int`, *optional*, defaults to 2): Keep this many newest checkpoints.
        log_every (`int`, defaults to 1): Log meta-train metrics every this many steps.
        report_to (`list[str]`, defaults to ``["tensorboard"]``): Accelerate trackers.
        progress_bar (`bool`, defaults to True): tqdm bars for meta-steps and evaluation.
        seed (`int`, defaults to 0): Seed of the model initialisation (head, LoRA) and dropout.
        cpu (`bool`, defaults to False): Force CPU even when an accelerator is present.

    Example:
        ```python
        >>> from metanlp.training.config import MetaTrainerConfig
        >>> config = MetaTrainerConfig.from_yaml("metanlp/configs/default.yaml")
        >>> config.algorithm
        'maml'
        ```
    """

    model: str = "default"
    attn_implementation: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    meta_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_steps: int = 100
    steps_per_epoch: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    eval_every: int = 25
    keep_best: bool = True
    metric_for_best: str = "accuracy"
    greater_is_better: bool | None = None
    early_stopping_patience: int | None = None
    mixed_precision: str = "no"
    output_dir: str = "runs/meta"
    overwrite_output_dir: bool = False
    save_every: int | None = None
    save_total_limit: int | None = 2
    log_every: int = 1
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    progress_bar: bool = True
    seed: int = 0
    cpu: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = _build(DataConfig, self.data, "data")
        if isinstance(self.optimizer, dict):
            self.optimizer = _build(OptimizerConfig, self.optimizer, "optimizer")
        super().__post_init__()
        owner = "MetaTrainerConfig"
        from metanlp.meta.registry import check_registered  # imports torch: not at --help

        check_registered(owner, self.algorithm)
        check_choice(owner, "attn_implementation", self.attn_implementation, ATTN_CHOICES)
        check_choice(owner, "mixed_precision", self.mixed_precision, MIXED_PRECISION_CHOICES)
        for key in (
            "meta_batch_size",
            "gradient_accumulation_steps",
            "max_steps",
            "eval_every",
            "log_every",
        ):
            _check_int(owner, key, getattr(self, key), 1)
        _check_int(owner, "seed", self.seed, 0)
        for key in ("save_every", "save_total_limit", "early_stopping_patience", "steps_per_epoch"):
            if getattr(self, key) is not None:
                _check_int(owner, key, getattr(self, key), 1)
        if self.greater_is_better is None:
            self.greater_is_better = not str(self.metric_for_best).endswith("loss")
        for key in ("greater_is_better", "overwrite_output_dir", "keep_best"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{owner}.{key}={getattr(self, key)!r} must be true or false.")
        if isinstance(self.report_to, str):
            self.report_to = [] if self.report_to == "none" else [self.report_to]

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaTrainerConfig:
        return _build(cls, data, "MetaTrainerConfig")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> MetaTrainerConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> MetaTrainerConfig:
        """Load a YAML file (``yaml.safe_load``: no code runs); ``overrides`` replace keys
        (``"optimizer.lr"``-style dotted keys reach into the nested sections).

        A bare name such as ``"default"`` or ``"full"`` resolves to ``metanlp/configs/<name>.yaml``.
        """
        from metanlp.files import safe_load_yaml  # files imports torch: not at --help time

        path = resolve_config_path(path)
        try:
            data = safe_load_yaml(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(
                f"{path} is not valid YAML{where}: {problem}. Fix the file (indentation, "
                "brackets, quotes); the packaged configs in metanlp/configs/ are examples."
            ) from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text; a config is a YAML file.") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path} must hold a mapping of config keys, got {type(data).__name__}."
            )
        return cls.from_dict(apply_overrides(data, overrides))


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A YAML path, or the name of a packaged config (``default``, ``full``, ...)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    packaged = Path(__file__).parent.parent / "configs" / f"{path}.yaml"
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in (Path(__file__).parent.parent / "configs").glob("*.yaml"))
    raise FileNotFoundError(
        f"No config file {str(path)!r}; pass a YAML path or one of the packaged configs {names}."
    )


HF_SPELLINGS = {
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "adam_epsilon": "optimizer.eps",
    "warmup_steps": "optimizer.warmup_steps",
    "max_grad_norm": "optimizer.max_grad_norm",
    "lr_scheduler_type": "optimizer.schedule",
    "model_name_or_path": "model",
    "eval_steps": "eval_every",
    "save_steps": "save_every",
    "logging_steps": "log_every",
    "load_best_model_at_end": "keep_best",
}
"""`transformers.TrainingArguments` names -> the config key that means the same (the CLI accepts
them as options; a config file naming one is told the key to use)."""


def _build(cls: type, data: dict[str, Any], owner: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{owner} must be a mapping, got {data!r}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        hints = []
        for key in unknown:
            if cls is MetaTrainerConfig and str(key) in HF_SPELLINGS:
                hints.append(f"{key!r} is {HF_SPELLINGS[str(key)]!r} here")
            elif (near := closest(str(key), known)) is not None:
                hints.append(f"{key!r}: did you mean {near!r}?")
        why = f" ({'; '.join(hints)})" if hints else ""
        raise ValueError(
            f"Unknown key(s) {unknown} in {owner}{why}; allowed keys: {sorted(known)}."
        )
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hinted = hints[key]
        if is_dataclass(hinted) and isinstance(value, dict):
            value = _build(hinted, value, f"{owner}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` applied; a dotted key (``"optimizer.lr"``) sets a nested key."""
    data = dict(data)
    for key, value in overrides.items():
        outer, _, inner = key.partition(".")
        if not inner:
            data[outer] = value
            continue
        section = data.get(outer)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ValueError(f"Cannot set {key}: {outer} is {section!r}, not a mapping.")
        data[outer] = {**section, inner: value}
    return data


_ARG_ENTRY = re.compile(r"^ {8}(\w+) \(")
_ARG_NAME = re.compile(r"(?:^|,\s*)(\w+) \(`([^`]+)`")


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its description in the ``Args:`` section of ``cls``'s docstring (and of
    its dataclass bases), so that the docstring is the one place a setting is explained (the
    CLI's ``--key`` overrides show it). Entries that document several fields share the text."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        if "Args:" not in doc:
            continue
        block = doc.split("Args:", 1)[1]
        block = re.split(r"\n\S", block, maxsplit=1)[0]  # up to the next section (Example:)
        entries: list[str] = []
        for line in block.splitlines():
            if _ARG_ENTRY.match("    " + line):
                entries.append(line.strip())
            elif entries:
                entries[-1] += " " + line.strip()
        pending: list[
            str
        ] = []  # names of an entry continued on the next line ("a (...), b (...),")
        for entry in entries:
            head, sep, text = entry.partition("): ")
            pending += [name for name, _type in _ARG_NAME.findall(head + ")")]
            if sep:
                out.update({name: " ".join(text.split()) for name in pending})
                pending = []
    return out
