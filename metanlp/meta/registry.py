"""One explicit registry of meta-learning algorithms: ``name -> (config class, algorithm class)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metanlp.meta.base import MetaAlgorithm, MetaConfig
from metanlp.models import FewShotModel
from metanlp.spec import LearnerSpec, adapt_settings, did_you_mean

_ALGORITHMS: dict[str, tuple[type[MetaConfig], type[MetaAlgorithm]]] = {}


def register_algorithm(
    name: str, config_cls: type[MetaConfig], algo_cls: type[MetaAlgorithm]
) -> None:
    """Make an algorithm available to `build_algorithm`, the trainer, the API and the CLI.

    Args:
        name (`str`): unique lower-case name, e.g. ``"maml"``.
        config_cls (`type[MetaConfig]`): its config dataclass.
        algo_cls (`type[MetaAlgorithm]`): its class; ``algo_cls.config_class`` must accept
            ``config_cls`` instances.

    Example:
        ```python
        >>> register_algorithm("my_maml", MyConfig, MyMAML)
        ```
    """
    if not isinstance(name, str) or not name or name != name.strip().lower():
        raise ValueError(f"Algorithm name {name!r} must be a non-empty lower-case string.")
    if name in _ALGORITHMS:
        raise ValueError(
            f"An algorithm named {name!r} is already registered ({_ALGORITHMS[name][1].__name__}); "
            "pick another name."
        )
    if not (isinstance(config_cls, type) and issubclass(config_cls, MetaConfig)):
        raise TypeError(f"config_cls for {name!r} must subclass MetaConfig, got {config_cls!r}.")
    if not (isinstance(algo_cls, type) and issubclass(algo_cls, MetaAlgorithm)):
        raise TypeError(f"algo_cls for {name!r} must subclass MetaAlgorithm, got {algo_cls!r}.")
    if not issubclass(config_cls, algo_cls.config_class):
        raise TypeError(
            f"{algo_cls.__name__}.config_class is {algo_cls.config_class.__name__}, which "
            f"{config_cls.__name__} does not extend."
        )
    _ALGORITHMS[name] = (config_cls, algo_cls)


def list_algorithms() -> list[str]:
    """Registered algorithm names, sorted."""
    return sorted(_ALGORITHMS)


def check_registered(owner: str, name: str) -> None:
    """Raise a `ValueError` naming the registered algorithms (and the closest one) when ``name``
    is not one; ``owner`` is the config whose ``algorithm`` field it is."""
    import metanlp.meta  # noqa: F401  (registers the built-in algorithms)

    if name not in _ALGORITHMS:
        raise ValueError(
            f"{owner}.algorithm={name!r} is not registered{did_you_mean(name, _ALGORITHMS)}; "
            f"choose one of {list_algorithms()}."
        )


def get_algorithm(name: str) -> tuple[type[MetaConfig], type[MetaAlgorithm]]:
    """``(config class, algorithm class)`` registered under ``name``."""
    try:
        return _ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"Unknown algorithm {name!r}; registered: {list_algorithms()}.") from None


def build_config(name: str, config: MetaConfig | Mapping[str, Any] | None = None) -> MetaConfig:
    """The config of algorithm ``name`` from an instance, a dict (e.g. JSON/YAML) or defaults."""
    config_cls, _ = get_algorithm(name)
    if config is None:
        return config_cls()
    if isinstance(config, Mapping):
        return config_cls.from_dict(config)
    if not isinstance(config, config_cls):
        raise TypeError(
            f"Algorithm {name!r} takes a {config_cls.__name__} (or a dict of its fields), "
            f"got {type(config).__name__}."
        )
    return config


def build_algorithm(
    name: str, model: FewShotModel, config: MetaConfig | Mapping[str, Any] | None = None
) -> MetaAlgorithm:
    """Instantiate algorithm ``name`` on ``model``.

    Example:
        ```python
        >>> algo = build_algorithm("maml", model, {"params": "lora", "inner_steps": 3})
        >>> metrics = algo.meta_backward(episode, scale=1 / meta_batch_size)
        ```
    """
    _, algo_cls = get_algorithm(name)
    return algo_cls(model, build_config(name, config))


def algorithm_options(spec: LearnerSpec) -> dict[str, Any]:
    """The algorithm's config for a learner spec (`metanlp.spec.LearnerSpec`): ``adapt`` becomes
    ``params`` (mapped by the algorithm's config class, see `MetaConfig.params_for_adapt`) unless
    ``algorithm_config`` sets it."""
    import metanlp.meta  # noqa: F401  (registers the built-in algorithms)

    config_cls, _ = get_algorithm(spec.algorithm)
    options = {"params": config_cls.params_for_adapt(spec.adapt), **spec.algorithm_config}
    if options["params"] == "top" and "top_layers" not in options:
        options["top_layers"] = int(adapt_settings(spec)["top_layers"])
    return options


def algorithm_from_spec(spec: LearnerSpec, model: FewShotModel) -> MetaAlgorithm:
    """The registered algorithm ``spec.algorithm`` over ``model`` with `algorithm_options`."""
    return build_algorithm(spec.algorithm, model, algorithm_options(spec))
