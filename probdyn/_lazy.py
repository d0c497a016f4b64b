"""Submodules loaded on first use, as NumPy, SciPy and JAX load theirs (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable


def lazy_submodules(package: str, submodules: Iterable[str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``package.name`` when ``name`` is first read."""
    names = frozenset(submodules)

    def __getattr__(name: str):
        if name in names:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
