"""The registry of structured-sparsity methods: one file per method, registered by name.

``get_method("hgs", {"lambda": 1e-3})`` builds a method with its hyperparameters;
``list_methods()`` names them all. A duplicate name raises ``ValueError``; an unknown name
raises ``CompressorError`` listing the valid ones.
"""

from __future__ import annotations

import importlib
from typing import Any

from compressor.errors import CompressorError
from compressor.methods.base import Method, Regularizer

__all__ = [
    "Method",
    "Regularizer",
    "describe_methods",
    "get_method",
    "list_methods",
    "method_class",
    "register",
]

_REGISTRY: dict[str, type[Method]] = {}
# Modules holding the built-in methods, imported on first use so that importing the
# registry stays cheap.
_BUILTIN = ("none", "l1", "l2", "ssl", "slimming", "l1l2", "hgs", "l0sgl", "ffr")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for name in _BUILTIN:
        importlib.import_module(f"compressor.methods.{name}")


def list_methods() -> list[str]:
    """Registered method names, built-ins first in their canonical order."""
    _load_builtins()
    return [*_BUILTIN, *sorted(n for n in _REGISTRY if n not in _BUILTIN)]


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``."""
    _load_builtins()
    if name not in _REGISTRY:
        raise CompressorError(
            f"unknown method {name!r}; choose one of: {', '.join(list_methods())}"
        )
    return _REGISTRY[name]


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    """An instance of method ``name`` with ``options`` (names of its ``Params`` fields;
    ``lambda`` is accepted for ``lam``)."""
    cls = method_class(name)
    return cls(cls.make_params(options or {}))


def describe_methods() -> list[dict[str, Any]]:
    """Name, paper, reading, default hyperparameters and default selection of each method."""
    import dataclasses

    out = []
    for name in list_methods():
        cls = _REGISTRY[name]
        out.append(
            {
                "name": name,
                "paper": cls.paper,
                "reading": cls.reading,
                "defaults": dataclasses.asdict(cls.Params()),
                "selection": dict(cls.selection),
            }
        )
    return out
