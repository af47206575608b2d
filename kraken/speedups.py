"""Where the C versions of a few hot byte scans come from: ``kraken._speedups``, built from
kraken/csrc by ``pip install`` where a C compiler is (setup.py). Each has its Python
definition beside the code that calls it, which serves where the extension was not built,
or everywhere with ``KRAKEN_PURE_PYTHON=1``; tests compare the two. A leaf."""
from __future__ import annotations

import os
from types import ModuleType
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

PURE_PYTHON = bool(os.environ.get("KRAKEN_PURE_PYTHON"))
"""Serve with the Python definitions even where the C versions were built."""


def _extension() -> ModuleType | None:
    """``kraken._speedups``, or None where it was not built (no C compiler at install)."""
    try:
        from kraken import _speedups
    except ImportError:  # the Python definitions serve
        return None
    return _speedups


def native(name: str) -> Callable | None:
    """``kraken._speedups``'s function ``name``, or None where the extension was not built."""
    extension = _extension()
    return None if extension is None else getattr(extension, name)


def built() -> bool:
    """Whether ``kraken._speedups`` was built for this interpreter (and imports)."""
    return _extension() is not None


def pick(c_version: F | None, python_version: F) -> F:
    """What serves: the C version, unless it was not built or ``PURE_PYTHON`` is set."""
    return python_version if c_version is None or PURE_PYTHON else c_version
