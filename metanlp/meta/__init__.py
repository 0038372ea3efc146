"""Meta-learning algorithms over `metanlp.models.FewShotModel`, sharing one inner-loop engine.

Importing this package registers every built-in algorithm; list them with `list_algorithms()`
and build one with `build_algorithm(name, model, config)`. See docs/algorithms.md.
"""

from __future__ import annotations

import importlib

from metanlp.meta.base import MetaAlgorithm, MetaConfig, accuracy, model_mode, task_loss
from metanlp.meta.inner import InnerLoopResult, InnerOptimizer, inner_loop
from metanlp.meta.params import PARAMETER_SETS, configure_trainable, select_parameters
from metanlp.meta.registry import (
    build_algorithm,
    build_config,
    get_algorithm,
    list_algorithms,
    register_algorithm,
)

# Each algorithm module registers itself on import. A new built-in algorithm adds its module
# name here; a missing one is an installation fault and fails the import loudly.
_ALGORITHM_MODULES = (
    "maml",
    "reptile",
    "anil",
    "metasgd",
    "mamlpp",
    "protonet",
    "protomaml",
    "imaml",
    "decomposed",
)
for _name in _ALGORITHM_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = [
    "PARAMETER_SETS",
    "InnerLoopResult",
    "InnerOptimizer",
    "MetaAlgorithm",
    "MetaConfig",
    "accuracy",
    "build_algorithm",
    "build_config",
    "configure_trainable",
    "get_algorithm",
    "inner_loop",
    "list_algorithms",
    "model_mode",
    "register_algorithm",
    "select_parameters",
    "task_loss",
]
