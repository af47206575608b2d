"""request_bytes, a provider request's bytes (kraken/upstream/connection.py), in C
(kraken/csrc/request_bytes.c) and Python: byte for byte the same request."""
from __future__ import annotations

import pytest

from kraken.upstream.connection import request_bytes_c, request_bytes_py

HEADERS = [(b"host", b"api.example.com"), (b"content-type", b"application/json"),
           (b"authorization", b"Bearer sk-x"), (b"content-length", b"2")]
VERSIONS = [request_bytes_py] + ([request_bytes_c] if request_bytes_c is not None else [])


def test_the_c_version_is_built_where_the_tests_run():
    assert request_bytes_c is not None  # tools/test builds the extension


@pytest.mark.parametrize("request_bytes", VERSIONS)
def test_the_line_the_fields_a_blank_line_then_the_body(request_bytes):
    assert request_bytes("POST", "/v1/chat/completions", HEADERS, b"{}") == (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: api.example.com\r\n"
        b"content-type: application/json\r\nauthorization: Bearer sk-x\r\n"
        b"content-length: 2\r\n\r\n{}")
    assert request_bytes("GET", "/v1/models", (), b"") == b"GET /v1/models HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("request_bytes", VERSIONS)
def test_a_target_beyond_ascii_is_utf8_and_a_lone_surrogate_refused(request_bytes):
    assert request_bytes("GET", "/v1/caf\u00e9", [(b"a", b"")], b"x") == (
        b"GET /v1/caf\xc3\xa9 HTTP/1.1\r\na: \r\n\r\nx")
    with pytest.raises(UnicodeEncodeError):
        request_bytes("GET", "/\ud800", [], b"")


def test_the_c_version_leaves_other_shapes_to_the_python_one():
    if request_bytes_c is None:
        pytest.fail("extension not built")
    odd = ([[b"a", b"1"]], [(b"a", bytearray(b"1"))], [(b"a", b"1", b"2")])
    for headers in odd:
        assert request_bytes_c("POST", "/", headers, b"") is None
        assert request_bytes_py("POST", "/", headers, b"").startswith(b"POST / HTTP/1.1\r\na: 1")
    assert request_bytes_c("POST", "/", [(b"a", "1")], b"") is None
    with pytest.raises(TypeError):  # a str value: refused, as it always was
        request_bytes_py("POST", "/", [(b"a", "1")], b"")
    assert request_bytes_c("POST", "/", [], bytearray(b"x")) is None
    assert request_bytes_c("POST", "/", iter([]), b"") is None
    with pytest.raises(TypeError):
        request_bytes_c(b"POST", "/", [], b"")
    with pytest.raises(TypeError):
        request_bytes_c("POST", "/", [])
