"""A provider response's field section read in C (kraken/csrc/response_head.c, built by ``pip
install`` where a C compiler is, as on every test machine): wherever it answers, it answers
what ``ResponseParser._fields`` answers; where that refuses the section, it leaves it to it
(None), so every refusal and its message stay the Python reader's."""
from __future__ import annotations

import random

import pytest

from kraken.upstream.response import ResponseError, ResponseParser, response_fields_c

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
