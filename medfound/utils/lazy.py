"""Package namespaces whose public names are imported on first use (so importing the package is cheap)."""
from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, api: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: each name of ``api`` (name -> defining module) is
    imported on first use and kept in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str):
        if name in api:
            value = getattr(importlib.import_module(api[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
