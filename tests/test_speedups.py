"""The C extension (kraken/csrc, ``kraken._speedups``) is built where a C compiler is, as on
every test machine, and its functions are what serves unless ``KRAKEN_PURE_PYTHON`` is set.
That each answers as its Python definition is proven beside that definition's own tests."""
from __future__ import annotations

import shutil

import pytest

from kraken import plainchunk, speedups
from kraken.http import exchange, h1fast
from kraken.upstream import connection, response

BUILT = speedups.native("plain_sse_chunk") is not None


@pytest.mark.skipif(not BUILT and shutil.which("cc") is None,
                    reason="no C compiler here: the extension cannot have been built")
def test_the_extension_is_built_where_a_compiler_is_and_serves():
    # (the test machines have a compiler: a missing extension is a build that failed)
    assert BUILT
    pairs = [(plainchunk.plain_sse_chunk, plainchunk.plain_sse_chunk_c, plainchunk.plain_sse_chunk_py),
             (h1fast.read_common_head, h1fast.read_common_head_c, h1fast.read_common_head_py),
             (response._response_fields, response.response_fields_c, None),
             (exchange.header_value, exchange.header_value_c, exchange.header_value_py)]
    for serving, c_version, python_version in pairs:
        assert c_version is not None and type(c_version).__name__ == "builtin_function_or_method"
        assert serving is (python_version if speedups.PURE_PYTHON else c_version)
    pipe = speedups.native("PipeProtocol")  # a type: the provider connection's pipe in C
    assert isinstance(pipe, type) and connection.PipeProtocol is (
        None if speedups.PURE_PYTHON else pipe)


def test_pick_keeps_to_python_where_asked_or_not_built(monkeypatch):
    def c_version(): ...
    def python_version(): ...
    assert speedups.pick(None, python_version) is python_version
    monkeypatch.setattr(speedups, "PURE_PYTHON", False)
    assert speedups.pick(c_version, python_version) is c_version
    monkeypatch.setattr(speedups, "PURE_PYTHON", True)
    assert speedups.pick(c_version, python_version) is python_version
