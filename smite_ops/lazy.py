"""Lazy package exports (PEP 562): a package names its public objects without importing their modules.

``import smite_ops`` or ``import pipeline`` must stay light (``smite_ops.errors`` is imported by every
configuration load; Ray and diffusers take seconds to import), so each name is imported on first access.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``(__getattr__, __dir__)`` pair of a package whose public names load on first access.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the module that defines it (absolute dotted path).

    Returns:
        Module-level ``__getattr__`` (imports the defining module, caches the object on the package) and
        ``__dir__``.
    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__
