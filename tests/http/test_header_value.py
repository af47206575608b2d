"""``Request.header``: its Python definition (``header_value_py``) says what a lookup answers,
and the C version (kraken/csrc/header.c, what serves where the extension was built) must answer
the same for every request the readers make, and for anything else raise or answer as Python."""
from __future__ import annotations

import random

import pytest

from kraken import speedups
from kraken.http import exchange
from kraken.http.exchange import Request, header_value_c, header_value_py

SDK_FIELDS = (
    (b"host", b"127.0.0.1:8080"), (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"), (b"accept", b"application/json"),
    (b"content-type", b"application/json"), (b"user-agent", b"OpenAI/Python 1.51.0"),
    (b"x-stainless-lang", b"python"), (b"x-stainless-os", b"Linux"),
    (b"authorization", b"Bearer kr_test_x"), (b"x-stainless-retry-count", b"0"),
    (b"content-length", b"93"), (b"x-request-id", b"first"), (b"x-request-id", b"second"),
)


def request(fields) -> Request:
    return Request("POST", "/v1/chat/completions", fields, b"", "127.0.0.1", 0)


@pytest.mark.parametrize("name, value", [
    (b"authorization", b"Bearer kr_test_x"), (b"host", b"127.0.0.1:8080"),
    (b"x-request-id", b"first"),  # the first of a repeated field
    (b"traceparent", None), (b"Authorization", None),  # names are compared as given (lower-case)
    (b"", None), (b"content-lengt", None), (b"content-length ", None),
])
def test_a_lookup_answers_the_first_value_of_the_exact_name(name, value):
    assert request(SDK_FIELDS).header(name) == value
    assert header_value_py(SDK_FIELDS, name) == value
    assert request(()).header(name) is None


def test_the_serving_version_is_c_where_built():
    assert exchange.header_value is (header_value_py if header_value_c is None
                                      or speedups.PURE_PYTHON else header_value_c)


def random_fields(rng: random.Random) -> tuple:
    names = [b"a", b"ab", b"authorization", b"x-api-key", b"", b"traceparent", b"\xff"]
    return tuple((rng.choice(names) + rng.choice([b"", b"b"]), bytes([rng.randrange(256)]))
                 for _ in range(rng.randrange(12)))


@pytest.mark.skipif(header_value_c is None, reason="the C version is not built")
def test_c_answers_as_python_on_random_fields():
    rng = random.Random(7)
    for _ in range(20000):
        fields = random_fields(rng)
        name = rng.choice([b"a", b"ab", b"abb", b"authorization", b"x-api-key", b"", b"b"])
        as_list = [list(pair) for pair in fields] if rng.random() < 0.1 else list(fields)
        assert header_value_c(as_list, name) is header_value_py(as_list, name)
        assert header_value_c(fields, name) is header_value_py(fields, name)


@pytest.mark.skipif(header_value_c is None, reason="the C version is not built")
@pytest.mark.parametrize("fields, name", [
    (((b"a", b"1"),), "a"),              # a str name matches no bytes field, as in Python
    ((("a", "1"),), "a"),                # str fields (never made by the readers) still compare
    (((bytearray(b"a"), b"1"),), b"a"),  # any equal key: Python's == decides
])
def test_c_compares_other_types_as_python(fields, name):
    assert header_value_c(fields, name) == header_value_py(fields, name)


@pytest.mark.skipif(header_value_c is None, reason="the C version is not built")
@pytest.mark.parametrize("fields", [((b"a",),), ((b"a", b"1", b"2"),), (None,)])
def test_c_refuses_what_is_no_pair_as_python(fields):
    with pytest.raises((ValueError, TypeError)):
        header_value_py(fields, b"zz")
    with pytest.raises((ValueError, TypeError)):
        header_value_c(fields, b"zz")
