"""A package's names loaded on first use (PEP 562), for packages whose modules are heavy to import
(Ray Data, torch) while most of their users need a light part of them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The package's module ``__getattr__``: a name of ``homes`` is imported from its module on
    first use and kept in ``namespace`` (the package's globals), so it is looked up once."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name]), name)
        namespace[name] = value
        return value

    return __getattr__
