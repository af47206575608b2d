"""Where the C versions of a few hot byte scans come from: ``kraken._speedups``, built from
kraken/csrc by ``pip install`` where a C compiler is (setup.py). Each has its Python
definition beside the code that calls it, which serves where the extension was not built,
or everywhere with ``KRAKEN_PURE_PYTHON=1``; tests compare the two. A leaf."""
from __future__ import annotations

import os
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

PURE_PYTHON = bool(os.environ.get("KRAKEN_PURE_PYTHON"))
"""Serve with the Python definitions even where the C versions were built."""


def native(name: str) -> Callable | None:
    """``kraken._speedups``'s function ``name``, or None where the extension was not built."""
    try:
        from kraken import _speedups
    except ImportError:  # no C compiler at install: the Python definitions serve
        return None
    return getattr(_speedups, name)


def built() -> bool:
    """Whether ``kraken._speedups`` was built for this interpreter (and imports)."""
    try:
        from kraken import _speedups  # noqa: F401
    except ImportError:
        return False
    return True


def pick(c_version: F | None, python_version: F) -> F:
    """What serves: the C version, unless it was not built or ``PURE_PYTHON`` is set."""
    return python_version if c_version is None or PURE_PYTHON else c_version
