"""`LearnerSpec`: the one description of a learner's model and algorithm.

A meta-training run (`metanlp.training.MetaTrainerConfig`) and a saved learner
(`metanlp.serialization.LearnerConfig`) both extend it, so the two cannot drift apart: the same
choices, the same LoRA defaults, the same ``adapt`` -> ``params`` rule. What a spec builds is built
beside its kind: the model by `metanlp.models.build_model`, the algorithm by
`metanlp.meta.registry.algorithm_from_spec`.

This module imports no other metanlp module at the top, and nothing heavy (the trainer config is
read before torch is needed); validating ``algorithm`` looks the name up in the registry.
"""

from __future__ import annotations

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


def closest(word: str, choices: Any) -> str | None:
    """The one of ``choices`` closest to a misspelt ``word`` (`difflib`), or ``None``."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, else ``""``."""
    near = closest(word, choices)
    return f" (did you mean {near!r}?)" if near is not None else ""


def check_choice(owner: str, key: str, value: Any, choices: tuple) -> None:
    """Raise a `ValueError` naming the allowed values (and the closest one) when ``value`` is not
    one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{owner}.{key}={value!r} is not allowed{did_you_mean(value, choices)}; choose one "
            f"of {list(choices)}."
        )


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
        if not isinstance(self.algorithm, str):
            raise ValueError(f"{owner}.algorithm={self.algorithm!r} must be an algorithm name.")
        # Whether the name is registered is checked by the configs that extend the spec
        # (`metanlp.meta.registry.check_registered`), so that this module imports no other.

    def spec_fields(self) -> dict[str, Any]:
        """The `LearnerSpec` fields of this object (to copy them into another spec's subclass)."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(LearnerSpec)}


def adapt_settings(spec: LearnerSpec) -> dict[str, Any]:
    """``spec.adapt_options`` with the defaults filled in."""
    return {**ADAPT_OPTION_DEFAULTS, **spec.adapt_options}
