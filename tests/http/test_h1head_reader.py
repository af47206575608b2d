"""The request-head parse calls h11's reader without an ``h11.Connection``: for every head of
the malformed-request and smuggling tables (and good heads), it must answer exactly what the
Connection path answers (same request, same refusal status, same 100-continue flag)."""
from __future__ import annotations

import pytest

from kraken.http import h1head
from kraken.http.h1head import HeadRejected, parse_head
from test_h1_malformed import MALFORMED
from test_hardening import SMUGGLING

MAX_HEAD, MAX_URI = 16 * 1024, 8 * 1024
GOOD = [
    ("post", b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"),
    ("chunked", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("expect", b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
    ("expect-http10", b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
    ("upgrade", b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    ("close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    ("http10", b"GET / HTTP/1.0\r\n\r\n"),
]
HEADS = [(name, raw[: raw.find(b"\r\n\r\n") + 4]) for name, raw, *_ in [*MALFORMED, *SMUGGLING]
         if b"\r\n\r\n" in raw] + GOOD


def outcome(head: bytes):
    try:
        event, headers, expect = parse_head(head, MAX_HEAD, MAX_URI)
    except HeadRejected as exc:
        return ("refused", exc.status, str(exc))
    assert headers == tuple(event.headers)  # the pairs made once are h11's own
    return (event.method, event.target, headers, event.http_version, expect)


@pytest.mark.parametrize("head", [pytest.param(h, id=n) for n, h in HEADS])
def test_direct_reader_answers_as_the_h11_connection(head: bytes, monkeypatch):
    assert h1head._read_request_head is not None  # the pinned h11 has the reader
    direct = outcome(head)
    monkeypatch.setattr(h1head, "_read_request_head", None)
    assert outcome(head) == direct


def test_good_heads_parse_with_their_100_continue_flag():
    results = {name: outcome(head) for name, head in GOOD}
    assert results["expect"][4] is True and results["expect-http10"][4] is False
    assert results["post"][:2] == (b"POST", b"/v1/chat/completions")
