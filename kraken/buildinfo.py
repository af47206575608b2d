"""What this Kraken runs on, for ``kraken --version`` and /metrics' ``kraken_build_info``.

Two things outside the code move the CPU a request costs. The CPython build: a static one
(Debian's ``python3.11``) costs ~10% less per request than one running from a shared
``libpython`` built without profile-guided optimisation (as pyenv builds with
``--enable-shared`` often are; bench/README.md, "Interpreter"). And the C speedups: where
``pip install`` found no C compiler, or with ``KRAKEN_PURE_PYTHON=1``, their Python
definitions serve, slower. A leaf.
"""
from __future__ import annotations

import platform
from pathlib import Path

from kraken import __version__, speedups


def libpython() -> str:
    """"shared" if this process runs CPython from a shared libpython, else "static" (read from
    its mappings: a static binary's sysconfig still describes the shared build beside it);
    "unknown" without /proc."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "shared" if "/libpython" in maps else "static"


def speedups_state() -> str:
    """"c" where kraken._speedups serves; "python" where it was not built or is switched off."""
    return "c" if speedups.built() and not speedups.PURE_PYTHON else "python"


def labels() -> dict[str, str]:
    """``kraken_build_info``'s labels."""
    return {"version": __version__, "python": platform.python_version(),
            "libpython": libpython(), "speedups": speedups_state()}


def describe() -> str:
    """One line: ``kraken 0.1.0 (CPython 3.11.2, libpython static, speedups c)``."""
    found = labels()
    return (f"kraken {found['version']} ({platform.python_implementation()} {found['python']}, "
            f"libpython {found['libpython']}, speedups {found['speedups']})")
