"""Both versions of the provider connection's pipe: the C ``PipeProtocol`` (kraken/csrc/pipe.c,
what serves where the extension was built) and the Python one in ``data_received`` (what
serves without it, or with ``KRAKEN_PURE_PYTHON``). Tests that take ``pipe_version`` run once
with each, over real sockets."""
from __future__ import annotations

import pytest

from kraken import speedups
from kraken.upstream import connection

BUILT = speedups.native("PipeProtocol")


@pytest.fixture(params=["c", "python"])
def pipe_version(request, monkeypatch) -> str:
    if request.param == "c":
        if BUILT is None:
            pytest.skip("the C extension is not built here (tests/test_speedups.py fails then)")
        monkeypatch.setattr(connection, "PipeProtocol", BUILT)
    else:
        monkeypatch.setattr(connection, "PipeProtocol", None)
    return request.param
