"""The relay's per-read test: its Python definition says what a plain read is, and the C
version (built by ``pip install`` where a C compiler is, as on every test machine) answers
exactly as it does, odd reads included."""
from __future__ import annotations

import random

import pytest

from kraken.plainchunk import plain_sse_chunk_c, plain_sse_chunk_py

EVENT = b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
LETTERED = b"data: " + b"x" * (0xAB - 8) + b"\n\n"  # its size line has letters: ab


def chunk(body: bytes, line: bytes | None = None) -> bytes:
    return (b"%x" % len(body) if line is None else line) + b"\r\n" + body + b"\r\n"


CASES = [
    (chunk(EVENT), True),
    (chunk(EVENT * 3), True),  # several whole events in one chunk
    (chunk(b'data: {"usage":null}\n\n'), True),  # a null usage is no usage object
    (chunk(b'data: {"usage":  {"x":1}}\n\n'), True),  # two spaces: not the tap's pattern
    (chunk(b'data: {"usage":{"prompt_tokens":1}}\n\n'), False),
    (chunk(b'data: {"usage": {"prompt_tokens":1}}\n\n'), False),
    (chunk(EVENT + b'data: {"usage":{}}\n\n'), False),
    (chunk(EVENT[:-1]), False),  # an unfinished event
    (chunk(LETTERED), True),
    (chunk(LETTERED, line=b"AB"), False),  # upper case: not as Kraken writes it
    (chunk(EVENT, line=b"0%x" % len(EVENT)), False),  # a leading zero: not as Kraken writes it
    (chunk(EVENT, line=b"%x" % (len(EVENT) + 1)), False),
    (chunk(EVENT, line=b"%x;ext=1" % len(EVENT)), False),  # an extension
    (chunk(EVENT) + chunk(EVENT), False),  # two chunks
    (chunk(EVENT) + b"0\r\n\r\n", False),  # a chunk and the last chunk
    (b"0\r\n\r\n", False),
    (b"", False),
    (b"\n\n\r\n", False),
    (EVENT + b"\r\n", False),  # no size line
    # a provider's error event goes to the tap (which records the stream as failed)
    (chunk(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n'), False),
    (chunk(EVENT + b'data: {"error":{"message":"x","type":"server_error"}}\n\n'), False),
    (chunk(b'data: {"type":"error","code":"server_error"}\n\n'), False),  # Responses API
    (chunk(b'data: {"object":"error","message":"x"}\n\n'), False),  # older vLLM
    (chunk(b'data: {"x":"' + b"a" * 40 + b'"error"}\n\n'), False),  # past the first 16
    (chunk(b'data: {"x":"' + b"a" * 40 + b'"error'), False),  # unfinished: not plain anyway
    (chunk(b'data: {"text":"an \\"error\\" in the text"}\n\n'), True),  # escaped: text
    (chunk(b'data: {"text":"errors, terror, error"}\n\n'), True),  # no quotes around it
    (chunk(b'data: {"rr":"rrrr","err":"or","error_x":1}\n\n'), True),
]
CASES += [(chunk(b'data: {"k":"' + b"r" * pad + b'","error":{}}\n\n'), False)
          for pad in range(40)]  # the mark at every offset of the 16-byte steps
CASES += [(chunk(b'data: {"k":"' + b"r" * pad + b'","errr":{}}\n\n'), True) for pad in range(40)]


@pytest.mark.parametrize("data, plain", CASES)
def test_the_python_definition(data, plain):
    assert plain_sse_chunk_py(data) is plain


def reads(seed: int, count: int) -> list[bytes]:
    """Plain chunks and near misses: sizes, size lines, endings and usage keys varied."""
    rng = random.Random(seed)
    pieces = [EVENT, b"data: [DONE]\n\n", b'"usage":', b'"usage": ', b"{", b" ", b"\r\n", b"\n",
              b"\n\n", b"\r", b"0", b"a", b"F", b"-", b'data: {"usage":null}\n\n', b"\x00\xff",
              b'"error"', b'"err', b'or"', b"rr", b"r", b'"', b'{"error":{}}' * 3]
    out = []
    for _ in range(count):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.5:
            body += b"\n\n"
        size = len(body) + rng.choice([0, 0, 0, 1, -1, 16, -len(body)])
        line = rng.choice([b"%x" % size, b"%X" % size, b"0%x" % size, b"-%x" % abs(size), b""])
        data = line + b"\r\n" + body + rng.choice([b"\r\n", b"\r\n", b"\n", b"", b"\r\n0\r\n\r\n"])
        if rng.random() < 0.1:
            data = data[: rng.randint(0, len(data))]
        out.append(data)
    return out


def test_random_reads_cover_both_answers():
    answers = {plain_sse_chunk_py(data) for data in reads(1, 3000)}
    assert answers == {True, False}


@pytest.mark.skipif(plain_sse_chunk_c is None, reason="the C version is not built")
def test_c_version_answers_as_the_python_definition():
    for data, plain in CASES:
        assert plain_sse_chunk_c(data) is plain_sse_chunk_py(data) is plain, data
    for data in reads(2, 20000):
        assert plain_sse_chunk_c(data) is plain_sse_chunk_py(data), data


@pytest.mark.skipif(plain_sse_chunk_c is None, reason="the C version is not built")
def test_c_version_takes_only_bytes():
    with pytest.raises(TypeError):
        plain_sse_chunk_c(bytearray(chunk(EVENT)))
