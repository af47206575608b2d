"""A provider response's field section read in C (kraken/csrc/response_head.c, built by ``pip
install`` where a C compiler is, as on every test machine): wherever it answers, it answers
what ``ResponseParser._fields`` answers; where that refuses the section, it leaves it to it
(None), so every refusal and its message stay the Python reader's."""
from __future__ import annotations

import random

import pytest

from kraken.upstream.response import (ResponseError, ResponseParser, response_fields_c,
                                      response_head_c, response_head_py)

PROVIDER = (b"Date: Fri, 04 Dec 2026 10:00:00 GMT\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\nopenai-processing-ms: 93\r\n"
            b"x-request-id: req_0123456789abcdef\r\nx-ratelimit-remaining-tokens: 149999\r\n"
            b"Strict-Transport-Security: max-age=31536000; includeSubDomains; preload\r\n"
            b"Set-Cookie: __cf_bm=abc; path=/; expires=Fri, 04-Dec-26 10:30:00 GMT; HttpOnly\r\n"
            b"CF-RAY: 8f0e1d2c3b4a5968-AMS\r\nalt-svc: h3=\":443\"; ma=86400")
SECTIONS = [
    PROVIDER, b"Content-Length: 12", b"content-length: 007\r\nContent-Length: 7",
    b"Content-Length: 7\r\nContent-Length: 8", b"Content-Length: " + b"9" * 18,
    b"Content-Length: " + b"9" * 19, b"Content-Length: 1e3", b"Content-Length: ", b"Content-Length:+1",
    b"Transfer-Encoding: CHUNKED", b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", b"Connection: close",
    b"Connection: Keep-Alive, CLOSE", b"connection: closed", b"X-Empty:", b"X-Spaces:  \t v \x0b\x0c",
    b"X Y: inner space", b" X: lead", b"X : trail", b"\tX: tab", b": no name", b"no colon", b"",
    b"A: b\r\n", b"\r\nA: b", b"A: b\r\n\r\nC: d", b"A: b\rC: d", b"A: b\nC: d", b"A: b\r", b"\nA: b",
    b"A: \xe9\xff\x00\x7f", b"A:b:c", b"A::", b"\xff: v", b"TRANSFER-ENCODING: chunked\r\nContent-Length: 3",
]
PIECES = [b"\r\n", b"\r", b"\n", b":", b" ", b"\t", b"\x0b", b"Content-Length: 5", b"Content-Length: 6",
          b"Transfer-Encoding: chunked", b"Connection: close", b"0", b"9", b"a", b"A", b"\x00", b"\xff"]


def python_answer(section: bytes):
    try:
        return ResponseParser._fields(section)
    except ResponseError as exc:
        return ("refused", str(exc))


def mutated(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        section = bytearray(rng.choice(SECTIONS[:4] + SECTIONS[13:18]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(section) + 1)
            edit = rng.random()
            if edit < 0.5:
                section[at:at] = rng.choice(PIECES)
            elif edit < 0.8:
                section[at:at + 1] = rng.choice(PIECES)
            elif section:
                del section[min(at, len(section) - 1)]
        out.append(bytes(section))
    return out


@pytest.mark.skipif(response_fields_c is None, reason="the C reader is not built")
def test_c_reader_answers_as_fields_or_leaves_it_to_it():
    answered = refused = 0
    for section in SECTIONS + mutated(20000, seed=5):
        fast, slow = response_fields_c(section), python_answer(section)
        if fast is None:
            refused += slow[0] == "refused"
            # only a refusal or an over-long Content-Length is left to _fields
            assert slow[0] == "refused" or b"9" * 19 in section or len(max(
                (v for n, v in slow[0] if n == b"content-length"), key=len, default=b"")) > 18, section
        else:
            answered += 1
            assert fast == slow, section
            assert type(fast[0]) is list and all(type(pair) is tuple for pair in fast[0])
    assert answered > 5000 and refused > 5000  # both answers are exercised


@pytest.mark.skipif(response_fields_c is None, reason="the C reader is not built")
def test_c_reader_takes_only_bytes():
    with pytest.raises(TypeError):
        response_fields_c(bytearray(PROVIDER))


STATUS_LINES = [
    b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 429 Too Many", b"HTTP/1.1 999",
    b"HTTP/1.1 200", b"HTTP/1.1 2000 OK", b"HTTP/1.1 100 Continue", b"HTTP/1.1 199 x",
    b"HTTP/1.1 099 x", b"HTTP/1.0 200 OK", b"HTTP/1.1 20x OK", b"HTTP/1.1 2", b"HTTP/2 200",
    b"HTTP/1.1 500 \xff\r", b"http/1.1 200 OK", b"",
]
BODIES = [b"", b"5\r\nhello\r\n", b"{}", b"HTTP/1.1 200 OK\r\n\r\n"]


def heads(count: int, seed: int) -> list[bytes]:
    """Reads that begin with a head: status lines and field sections, with or without a body
    after the blank line, some cut short or with a byte of the whole read changed."""
    rng = random.Random(seed)
    sections = SECTIONS + mutated(200, seed)
    out = []
    for _ in range(count):
        section = rng.choice(sections)
        read = rng.choice(STATUS_LINES)
        read += b"\r\n" + section if section or rng.random() < 0.5 else b""
        read += b"\r\n\r\n" + rng.choice(BODIES)
        edit = rng.random()
        if edit < 0.1:
            read = read[:rng.randrange(len(read) + 1)]
        elif edit < 0.2:
            at = rng.randrange(len(read))
            read = read[:at] + rng.choice(PIECES) + read[at + 1:]
        out.append(read)
    return out


@pytest.mark.skipif(response_head_c is None, reason="the C reader is not built")
def test_c_head_reader_answers_as_the_parsers_steps_or_leaves_it_to_them():
    answered = left = 0
    for read in heads(20000, seed=9):
        fast, slow = response_head_c(read), response_head_py(read)
        if fast is None:
            left += 1
            # only an answer with a Content-Length past 18 digits is left to the parser
            assert slow is None or slow[3] >= 10 ** 18, read
        else:
            answered += 1
            assert fast == slow, read
            assert type(fast[2]) is list and all(type(pair) is tuple for pair in fast[2])
    assert answered > 3000 and left > 3000  # both answers are exercised


def test_parser_reads_a_whole_head_in_one_read_as_in_pieces():
    """The one-call head (a read holding the whole head) and the parser's own steps (the head
    fed a byte at a time) end the same: status, headers, framing, keep-alive and the body."""
    for read in heads(3000, seed=11):
        seen = []
        for pieces in ([read], [read[i:i + 1] for i in range(len(read))]):
            sink = _Sink()
            parser = ResponseParser(sink)
            try:
                for piece in pieces:
                    parser.feed(piece)
                outcome = (sink.events, parser.status, parser.keep_alive, parser.done)
            except ResponseError as exc:
                outcome = ("refused", str(exc), sink.events)
            seen.append(outcome)
        assert seen[0] == seen[1], read


class _Sink:
    def __init__(self):
        self.events = []

    def on_head(self, status, headers):
        self.events.append(("head", status, headers))

    def on_data(self, data):
        if self.events and self.events[-1][0] == "data":
            self.events[-1] = ("data", self.events[-1][1] + data)
        else:
            self.events.append(("data", data))

    def on_end(self):
        self.events.append(("end",))


@pytest.mark.skipif(response_head_c is None, reason="the C reader is not built")
def test_c_head_reader_takes_only_bytes():
    with pytest.raises(TypeError):
        response_head_c(bytearray(b"HTTP/1.1 200 OK\r\n\r\n"))
