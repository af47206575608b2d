"""What Kraken runs on, as ``kraken --version`` and /metrics say it: the CPython build (shared or
static libpython) and whether the C speedups serve, both of which move the CPU per request."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from harness import http, kraken_mapping, running_kraken, running_mock
from kraken import __version__, speedups

LIBPYTHON = "shared" if "/libpython" in Path("/proc/self/maps").read_text() else "static"


def version_line(**env: str) -> str:
    out = subprocess.run([sys.executable, "-m", "kraken", "--version"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_version_names_the_python_build_and_the_speedups():
    expected = "c" if speedups.built() and not speedups.PURE_PYTHON else "python"
    assert version_line() == (f"kraken {__version__} (CPython {platform.python_version()}, "
                              f"libpython {LIBPYTHON}, speedups {expected})")


def test_version_says_when_python_serves_instead_of_the_speedups():
    assert version_line(KRAKEN_PURE_PYTHON="1").endswith(", speedups python)")


@pytest.mark.anyio
async def test_metrics_carry_the_build(tmp_path):
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            text = (await http(k.port, "GET", "/metrics")).body.decode()
    speedups_state = "c" if speedups.built() and not speedups.PURE_PYTHON else "python"
    series = (f'kraken_build_info{{libpython="{LIBPYTHON}",python="{platform.python_version()}",'
              f'speedups="{speedups_state}",version="{__version__}"}} 1.0')
    assert series in text.splitlines()
