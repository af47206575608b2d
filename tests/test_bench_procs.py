"""bench/procs.interpreter names the interpreter a bench ran Kraken on, as its reports print it:
the build (shared libpython or static) moves every CPU figure."""
from __future__ import annotations

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from procs import interpreter  # noqa: E402


def test_names_the_version_and_how_libpython_is_linked():
    shared = "/libpython" in Path("/proc/self/maps").read_text()
    described = interpreter(sys.executable)
    assert described.startswith(sys.executable + " (")
    assert f"CPython {platform.python_version()}," in described
    assert described.endswith("shared libpython)" if shared else "static)")


def test_an_interpreter_that_cannot_run_is_named_with_why(tmp_path):
    missing = str(tmp_path / "python")
    assert interpreter(missing) == f"{missing} (FileNotFoundError)"
