"""The provider response head parser against the line-by-line one it replaced: same answer
(status, fields, framing, keep-alive, or the same refusal) for every head, odd ones included."""
from __future__ import annotations

import random

import pytest

from kraken.h1framing import ChunkedBody
from kraken.upstream import response
from kraken.upstream.response import ResponseError, ResponseParser


class Reference(ResponseParser):
    """The head parser as it was before the one-lookup status line (eb2569a) and the C field
    reader: ``ResponseParser._head`` itself with the table of HTTP/1.1 status lines empty
    (every line goes to ``_status``) and no C reader (every section goes to ``_fields``)."""

    def _head(self, head: bytes) -> None:
        fast = response._HTTP11_CODES, response._response_fields
        response._HTTP11_CODES, response._response_fields = {}, None
        try:
            ResponseParser._head(self, head)
        finally:
            response._HTTP11_CODES, response._response_fields = fast


class Heads:
    def __init__(self):
        self.heads = []

    def on_head(self, status, headers):
        self.heads.append((status, headers))

    def on_data(self, data):
        pass

    def on_end(self):
        pass


def outcome(cls, raw: bytes, no_body: bool):
    """Everything a head decides, as one comparable value."""
    sink = Heads()
    parser = cls(sink, no_body=no_body)
    try:
        parser.feed(raw)
    except ResponseError as exc:
        return "refused", str(exc), sink.heads
    reader = parser._reader
    return (sink.heads, parser.status, parser.keep_alive, type(reader).__name__,
            getattr(reader, "left", None), parser._one is not None)


STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 201 Created", b"HTTP/1.0 200 OK",
    b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 429 Too Many Requests", b"HTTP/1.1 000 Zero", b"HTTP/1.1 999 Nine",
    b"HTTP/1.1 2000 Long", b"HTTP/1.1 20", b"HTTP/1.1 2x0 OK", b"HTTP/1.1  200 OK",
    b"http/1.1 200 OK", b"HTTP/1.2 200 OK", b"HTTP/2 200", b"HTTP/1.1\t200 OK", b"HTTP/1.0 2",
    b"HTTP/1.1 \xd9\xa1\xd9\xa2\xd9\xa3", b"HTTP/1.1 +20 OK", b"HTTP/1.1 -20 OK", b" HTTP/1.1 200",
    b"HTTP/1.1 200\rOK", b"HTTP/1.1 200 \xff\xfe",
]
BENIGN = [
    b"Content-Type: text/event-stream; charset=utf-8", b"Date: Sun, 06 Dec 2026 03:00:00 GMT",
    b"X-Odd:  \t spaced \t", b"x-empty:", b"x-colons: a:b::c", b"in ner: x", b"x-upper: ABC",
    b"set-cookie: __cf_bm=abc; path=/; HttpOnly", b"alt-svc: h3=\":443\"", b"Server: cloudflare",
    b"X-Vt:\x0bv\x0c", b"x-nul: a\x00b", b"x-high: \xff\xc3\xa9", b"Connection: keep-alive",
]
FRAMING = [
    b"Transfer-Encoding: chunked", b"transfer-encoding: Chunked", b"Transfer-Encoding:chunked ",
    b"Transfer-Encoding: gzip", b"Transfer-Encoding: gzip, chunked", b"Content-Length: 0",
    b"content-length: 12", b"Content-Length: 012", b"Content-Length: +5", b"Content-Length: 1 2",
    b"CONTENT-LENGTH:7", b"Connection: close", b"connection: Keep-Alive, CLOSE",
]
BAD = [b"Bad Header : x", b" lead: x", b"trail : x", b"no-colon", b":no-name", b"\tTab: x",
       b"x-a\x0b: y", b"Content-Length : 5", b"Transfer-Encoding : chunked"]
ODD = [b"\r", b"\n", b" ", b"\t", b":", b"\x0b", b"\x0c", b"\r\n", b"\r\n ", b"\r\n:", b"\r\nx",
       b"\r\nConnection: close", b"A", b"\x00", b"\xff"]


def random_head(rng: random.Random) -> bytes:
    lines = [rng.choice(STATUS_LINES[:8] * 4 + STATUS_LINES)]
    lines += rng.choices(BENIGN, k=rng.randint(0, 12))
    for _ in range(rng.choice((0, 1, 1, 1, 2))):
        lines.insert(rng.randint(1, len(lines)), rng.choice(FRAMING))
    if rng.random() < 0.1:
        lines.insert(rng.randint(1, len(lines)), rng.choice(BAD))
    head = bytearray(b"\r\n".join(lines))
    for _ in range(rng.choice((0, 0, 0, 0, 1, 2, 3))):
        at = rng.randrange(0, len(head) + 1)
        head[at:at] = rng.choice(ODD)
    return bytes(head)


@pytest.mark.parametrize("seed", range(20))
def test_heads_are_read_as_the_line_by_line_parser_read_them(seed):
    """Random heads (status lines good and bad, framing fields alone, repeated and clashing,
    odd bytes anywhere), each with an interim 100 before it or not, for a HEAD or not: the
    parser reports the same status and fields, picks the same body reader, keeps the connection
    alive or not, or refuses with the same error, as the reference."""
    rng = random.Random(seed)
    refused = read = 0
    for _ in range(400):
        head = random_head(rng)
        if b"\r\n\r\n" in head + b"\r\n":
            continue  # the head would end there
        raw = head + b"\r\n\r\n"
        if rng.random() < 0.2:
            raw = b"HTTP/1.1 100 Continue\r\n\r\n" + raw
        no_body = rng.random() < 0.1
        expected = outcome(Reference, raw, no_body)
        assert outcome(ResponseParser, raw, no_body) == expected, raw
        if expected[0] == "refused":
            refused += 1
        else:
            read += 1
    assert refused > 40 and read > 40


@pytest.mark.parametrize("line", STATUS_LINES)
def test_every_status_line_alone_is_read_as_before(line):
    for raw in (line + b"\r\n\r\n", line + b"\r\nContent-Length: 0\r\n\r\n"):
        assert outcome(ResponseParser, raw, False) == outcome(Reference, raw, False), raw


def test_every_code_of_an_http11_line_is_read_as_before():
    for code in [b"%03d" % n for n in range(1000)] + [b"1a0", b"20 ", b"2.0", b"\xb2\xb3\xb9"]:
        raw = b"HTTP/1.1 " + code + b" X\r\nContent-Length: 0\r\n\r\n"
        assert outcome(ResponseParser, raw, False) == outcome(Reference, raw, False), raw


def test_a_head_alone_in_its_read_leaves_the_chunked_reader_untouched(monkeypatch):
    """A provider's usual first read is its head alone: nothing of the body reader runs for it
    (its one-chunk, whole-chunks and general steps all cost something on an empty read); the
    chunks that follow are read as ever."""
    calls = []
    for name in ("one", "whole", "feed_all"):
        real = getattr(ChunkedBody, name)
        monkeypatch.setattr(ChunkedBody, name,
                            lambda self, *args, _real=real, _name=name: calls.append(_name) or
                            _real(self, *args))
    sink = Collected()
    parser = ResponseParser(sink)
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert sink.status == 200 and calls == [] and sink.body == b""
    parser.feed(b"5\r\nhello\r\n")
    parser.feed(b"1\r\n!\r\n0\r\n\r\n")
    assert sink.body == b"hello!" and sink.ended and parser.done and parser.keep_alive
    assert calls[0] == "one"


class Collected(Heads):
    def __init__(self):
        super().__init__()
        self.status, self.body, self.ended = 0, b"", False

    def on_head(self, status, headers):
        self.status = status

    def on_data(self, data):
        self.body += data

    def on_end(self):
        self.ended = True
