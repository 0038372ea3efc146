"""`LearnerSpec`: the one description of a learner's model and algorithm.

A meta-training run (`metanlp.training.MetaTrainerConfig`) and a saved learner
(`metanlp.serialization.LearnerConfig`) both extend it, so the two cannot drift apart: the same
choices, the same LoRA defaults, the same ``adapt`` -> ``params`` rule, and one builder of each
object (`build_model`, `build_algorithm`).

This module imports nothing heavy at the top (the trainer config is read before torch is needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

TASKS = ("sequence", "token")
"""``"sequence"``: text classification (pooled features); ``"token"``: NER (per-token head)."""
POOLINGS = ("cls", "mean")
HEAD_INITS = ("random", "zero")
PARAMETER_SETS = ("all", "body", "top", "head", "lora", "adapter")
"""Named sets of adapted tensors (`metanlp.meta.params.select_parameters`); ``"body"`` is every
tensor but the token-embedding matrix."""
ADAPT_OPTION_DEFAULTS: dict[str, Any] = {
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_targets": None,
    "top_layers": 2,
}
"""Keys accepted in ``adapt_options`` and their defaults (LoRA shape; ``top_layers`` for ``top``).
``lora_targets=None``: PEFT's default modules for the encoder's model type (``query``/``value``
for BERT-family), else every linear layer (`metanlp.models.lora_targets_for`)."""


def check_choice(owner: str, key: str, value: Any, choices: tuple) -> None:
    """Raise a `ValueError` naming the allowed values when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{key}={value!r} is not allowed; choose one of {list(choices)}.")


@dataclass(kw_only=True)
class LearnerSpec:
    """The model around the weights and the algorithm that adapts it.

    Args:
        task (`str`, defaults to ``"sequence"``): ``"sequence"`` (text classification) or
            ``"token"`` (NER: a per-token head).
        pooling (`str`, defaults to ``"mean"``): ``"mean"`` or ``"cls"``.
        max_ways (`int`, defaults to 16): Rows of the head (the largest N; for NER tags incl. O).
        head_init (`str`, defaults to ``"random"``): ``"random"`` or ``"zero"`` (see `FewShotModel`).
        adapt (`str`, defaults to ``"lora"``): Which tensors the inner loop adapts: ``"lora"``,
            ``"adapter"`` (PEFT (IA)^3), ``"top"``, ``"head"`` or ``"all"``. It becomes the
            algorithm's ``params`` unless ``algorithm_config`` sets them; an algorithm's config may
            map it (ProtoNet has no head, so its ``"head"`` means the whole encoder).
        adapt_options (`dict`): ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_targets``,
            ``top_layers`` (defaults in ``ADAPT_OPTION_DEFAULTS``); other keys are an error.
        algorithm (`str`, defaults to ``"maml"``): Name in ``metanlp.meta.registry``.
        algorithm_config (`dict`): Keyword arguments of that algorithm's config dataclass.
    """

    task: str = "sequence"
    pooling: str = "mean"
    max_ways: int = 16
    head_init: str = "random"
    adapt: str = "lora"
    adapt_options: dict[str, Any] = field(default_factory=dict)
    algorithm: str = "maml"
    algorithm_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check_spec()

    def check_spec(self) -> None:
        """Validate the spec fields; every error names the field and what is accepted."""
        owner = type(self).__name__
        check_choice(owner, "task", self.task, TASKS)
        check_choice(owner, "pooling", self.pooling, POOLINGS)
        check_choice(owner, "head_init", self.head_init, HEAD_INITS)
        check_choice(owner, "adapt", self.adapt, PARAMETER_SETS)
        if (
            not isinstance(self.max_ways, int)
            or isinstance(self.max_ways, bool)
            or self.max_ways < 2
        ):
            raise ValueError(f"{owner}.max_ways={self.max_ways!r} must be an integer >= 2.")
        for key in ("adapt_options", "algorithm_config"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{owner}.{key}={getattr(self, key)!r} must be a mapping.")
        unknown = sorted(set(self.adapt_options) - set(ADAPT_OPTION_DEFAULTS))
        if unknown:
            raise ValueError(
                f"Unknown key(s) {unknown} in {owner}.adapt_options; allowed keys: "
                f"{sorted(ADAPT_OPTION_DEFAULTS)} (max_ways and head_init are top-level keys)."
            )
        import metanlp.meta  # noqa: F401  (registers the built-in algorithms)
        from metanlp.meta.registry import list_algorithms

        if self.algorithm not in list_algorithms():
            raise ValueError(
                f"{owner}.algorithm={self.algorithm!r} is not registered; choose one of "
                f"{list_algorithms()}."
            )

    def spec_fields(self) -> dict[str, Any]:
        """The `LearnerSpec` fields of this object (to copy them into another spec's subclass)."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(LearnerSpec)}


def adapt_settings(spec: LearnerSpec) -> dict[str, Any]:
    """``spec.adapt_options`` with the defaults filled in."""
    return {**ADAPT_OPTION_DEFAULTS, **spec.adapt_options}


def peft_config(spec: LearnerSpec) -> Any:
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


def algorithm_options(spec: LearnerSpec) -> dict[str, Any]:
    """The algorithm's config: ``adapt`` becomes ``params`` (mapped by the algorithm's config
    class, see `MetaConfig.params_for_adapt`) unless ``algorithm_config`` sets it."""
    import metanlp.meta  # noqa: F401  (registers the built-in algorithms)
    from metanlp.meta.registry import get_algorithm

    config_cls, _ = get_algorithm(spec.algorithm)
    options = {"params": config_cls.params_for_adapt(spec.adapt), **spec.algorithm_config}
    if options["params"] == "top" and "top_layers" not in options:
        options["top_layers"] = int(adapt_settings(spec)["top_layers"])
    return options


def build_model(
    spec: LearnerSpec,
    name_or_path: str | os.PathLike | None = None,
    *,
    attn_implementation: str = "sdpa",
) -> Any:
    """A freshly initialised `FewShotModel` of the spec on the encoder ``name_or_path``
    (``None``: the packaged MiniLM), wrapped with the spec's PEFT config."""
    from metanlp.models import load_encoder

    loaded = load_encoder(name_or_path, attn_implementation=attn_implementation)
    return model_from_encoder(spec, loaded, peft_config(spec))


def model_from_encoder(spec: LearnerSpec, loaded: Any, peft: Any) -> Any:
    """The spec's `FewShotModel` around a `LoadedEncoder`, wrapped with the PEFT config ``peft``
    (``None``: none); a saved learner passes the config read from its ``adapter/``."""
    from metanlp.models import FewShotModel

    return FewShotModel(
        loaded.model,
        task=spec.task,
        pooling=spec.pooling,
        max_ways=spec.max_ways,
        head_init=spec.head_init,
        peft_config=peft,
        tokenizer=loaded.tokenizer,
    )


def build_algorithm(spec: LearnerSpec, model: Any) -> Any:
    """The registered algorithm ``spec.algorithm`` over ``model`` with `algorithm_options`."""
    from metanlp.meta.registry import build_algorithm as build

    return build(spec.algorithm, model, algorithm_options(spec))
