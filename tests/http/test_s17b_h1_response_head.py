"""The client's response head as H1Exchange writes it: byte for byte the head a line-by-line
formatting gives, for every framing, keep-alive and field list."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import h11
import pytest

from kraken.http import h1exchange
from kraken.http.h1exchange import _STATUS_LINES, H1Exchange

DATE_LINES = b"date: Sun, 06 Dec 2026 03:00:00 GMT\r\nserver: kraken\r\n"


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    """One Date for the test: a second that ticks between two heads must not fail it."""
    monkeypatch.setattr(h1exchange, "DATE", SimpleNamespace(line=lambda: DATE_LINES))


def line_by_line(status, headers, length, *, keep_alive, http11, head_only, always):
    """The head as the rules say it, one field line at a time; and whether the body is chunked."""
    parts = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, DATE_LINES, always]
    for name, value in headers:
        parts.append(b"%s: %s\r\n" % (name, value))
    chunked = False
    if status in (204, 304):
        pass  # never a body, so no framing either
    elif length is not None:
        parts.append(b"content-length: %d\r\n" % length)
    elif http11 and not head_only:
        chunked = True
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked


FIELD_LISTS = [
    [],
    [(b"content-type", b"application/json")],
    [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
     (b"x-accel-buffering", b"no"), (b"x-request-id", b"req_1"), (b"x-kraken-overhead-ms", b"0.1")],
    [(b"x-empty", b""), (b"x-colons", b"a: b"), (bytearray(b"x-ba"), memoryview(b"mv"))],
    ((b"retry-after", b"1"),),
]


@pytest.mark.parametrize("fields", FIELD_LISTS)
def test_heads_match_the_line_by_line_formatting(fields):
    for status, length, keep_alive, http11, head_only, draining, always in itertools.product(
            (200, 204, 304, 404, 299), (None, 0, 1234), (True, False), (True, False), (True, False),
            (True, False), (b"", b"alt-svc: h3=\":443\"\r\n")):
        conn = SimpleNamespace(transport=None, draining=draining, always=always)
        head = h11.Request(method=b"HEAD" if head_only else b"GET", target=b"/",
                           headers=[(b"host", b"x")])
        exchange = H1Exchange(conn, head, keep_alive=keep_alive, http11=http11)
        expected, chunked = line_by_line(status, fields, length, keep_alive=keep_alive and not draining,
                                         http11=http11, head_only=head_only, always=always)
        assert exchange._head(status, fields, length) == expected
        assert exchange._chunked is chunked
        assert exchange.keep_alive is (keep_alive and not draining)


def test_fields_from_an_iterator_are_written_and_an_empty_one_adds_no_line():
    conn = SimpleNamespace(transport=None, draining=False, always=b"")
    expected, _ = line_by_line(200, FIELD_LISTS[2], 5, keep_alive=True, http11=True,
                               head_only=False, always=b"")
    assert H1Exchange(conn, keep_alive=True)._head(200, iter(FIELD_LISTS[2]), 5) == expected
    assert H1Exchange(conn, keep_alive=True)._head(200, iter(()), 5).endswith(
        b"server: kraken\r\ncontent-length: 5\r\n\r\n")
