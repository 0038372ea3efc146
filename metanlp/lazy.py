"""Names a package imports on first use (PEP 562), so importing it stays cheap (no torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    namespace: dict[str, Any],
    before: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose ``exports`` (name -> module) are
    imported when first read and then kept in its ``namespace`` (its ``globals()``).

    Args:
        before (`Mapping[str, str]`, *optional*): module -> a module to import first (e.g. the
            package that registers what the module lists).
    """
    before = dict(before or {})

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        if exports[name] in before:
            importlib.import_module(before[exports[name]])
        value = getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
