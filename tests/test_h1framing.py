"""The chunked decoder's one-step path (a read holding exactly one whole chunk) gives exactly
what its state machine gives, for any read: same body, same rest, same error, whatever the
chunks hold and wherever the reads are cut."""
from __future__ import annotations

import random

import pytest

from kraken.h1framing import NO_LIMIT, ChunkedBody, FramingError, whole_chunks_c, whole_chunks_py


def decode(reads: list[bytes], limit: int, reference: bool):
    body = ChunkedBody(limit, 1024)
    feed = body.feed_all if reference else body.feed
    out: list[bytes] = []
    try:
        for read in reads:
            rest = feed(read, out)
            if rest is not None:
                return b"".join(out), rest, None
    except FramingError as exc:
        return b"".join(out), None, (str(exc), exc.status)
    return b"".join(out), None, None


def stream(rng: random.Random, plain: float = 0.0) -> list[bytes]:
    """Chunks of SSE-like or CRLF-laden data, now and then a malformed or odd one; each chunk
    (size line, data, terminator) is one item, then the last chunk and what follows.
    ``plain``: the share of chunks framed as Kraken frames one."""
    parts = []
    for _ in range(rng.randint(0, 12)):
        data = rng.choice([b"data: {\"n\":1}\n\n", b"a\r\nb", b"\r\n", b"x" * rng.randint(1, 300),
                           b"\r\n\r\n0\r\n\r\n", bytes(rng.randrange(256) for _ in range(20))])
        size = b"%x" % len(data)
        size = rng.choice([size, size, size, size.upper(), size + b";ext=1", b" " + size,
                           size + b" ", b"0" + size, b"+" + size, b"%x" % (len(data) + 1)])
        if rng.random() < plain:
            parts.append(b"%x\r\n%b\r\n" % (len(data), data))
            continue
        parts.append(size + b"\r\n" + data + rng.choice([b"\r\n"] * 8 + [b"\n", b"XX", b"\r"]))
    parts.append(rng.choice([b"0\r\n\r\n", b"0\r\nx-t: 1\r\n\r\n", b"0\r\n", b"", b"0\r\nbad\r\n\r\n"]))
    parts.append(rng.choice([b"", b"HTTP/1.1 200 OK\r\n"]))
    return [part for part in parts if part]


@pytest.mark.parametrize("seed", range(40))
def test_the_one_step_path_matches_the_state_machine(seed):
    rng = random.Random(seed)
    for _ in range(150):
        chunks = stream(rng)
        raw = b"".join(chunks)
        cuts = sorted(rng.sample(range(1, len(raw)), min(max(len(raw) - 1, 0), rng.randint(0, 4))))
        reads = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)])]
        if rng.random() < 0.5:  # one read per chunk, as a paced stream arrives
            reads = chunks
        limit = rng.choice([NO_LIMIT, NO_LIMIT, 64, 400])
        assert decode(reads, limit, False) == decode(reads, limit, True), (raw, cuts, limit)


@pytest.mark.parametrize("line,plain", [(b"1a", True), (b"1A", False), (b"01a", False),
                                        (b"9", True), (b"1aB", False)])
def test_one_takes_only_a_size_line_as_kraken_writes_it(line, plain):
    """Its frame is then the one Kraken would write; other size lines are left to feed_all."""
    data = b"\r\nx" * int(line, 16)
    data = data[: int(line, 16)]
    read = line + b"\r\n" + data + b"\r\n"
    body = ChunkedBody(NO_LIMIT, 1024)
    assert body.one(read) == (data if plain else None)
    assert body.size == (len(data) if plain else 0)
    out: list[bytes] = []
    assert ChunkedBody(NO_LIMIT, 1024).feed(read, out) is None and out == [data]


@pytest.mark.parametrize("read", [b"0\r\n\r\n", b"1a;x=y\r\n" + b"x" * 26 + b"\r\n",
                                  b"1a \r\n" + b"x" * 26 + b"\r\n", b"3\r\nabcd\r\n",
                                  b"3\r\nab\r\n", b"3\r\nabc", b"3\r\nabc\r\n3\r\n", b"\r\n", b"",
                                  b"x" * 40 + b"\r\n", b"3\nabc\r\n"])
def test_one_takes_nothing_that_is_not_exactly_one_whole_plain_chunk(read):
    body = ChunkedBody(NO_LIMIT, 1024)
    assert body.one(read) is None and body.size == 0


def decode_whole(reads: list[bytes], limit: int) -> tuple[tuple, int]:
    """``decode`` as a provider response is read: ``whole`` first, ``feed_all`` for what it
    does not take; also how many reads ``whole`` took."""
    body = ChunkedBody(limit, 1024)
    out: list[bytes] = []
    taken = 0
    try:
        for read in reads:
            many = body.whole(read)
            if many is not None:
                taken += 1
                out.append(many[0])
                if many[1]:
                    return (b"".join(out), b"", None), taken
                continue
            rest = body.feed_all(read, out)
            if rest is not None:
                return (b"".join(out), rest, None), taken
    except FramingError as exc:
        return (b"".join(out), None, (str(exc), exc.status)), taken
    return (b"".join(out), None, None), taken


def grouped(rng: random.Random, chunks: list[bytes]) -> list[bytes]:
    """The chunk items in reads of one to six whole items each."""
    reads, at = [], 0
    while at < len(chunks):
        n = rng.randint(1, 6)
        reads.append(b"".join(chunks[at:at + n]))
        at += n
    return reads


@pytest.mark.parametrize("seed", range(40))
def test_the_whole_chunks_path_matches_the_state_machine(seed):
    rng = random.Random(seed)
    taken = 0
    for _ in range(150):
        chunks = stream(rng, plain=rng.choice([0.0, 0.8, 0.95]))
        raw = b"".join(chunks)
        cuts = sorted(rng.sample(range(1, len(raw)), min(max(len(raw) - 1, 0), rng.randint(0, 4))))
        reads = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)])]
        if rng.random() < 0.6:  # whole chunks per read, as a fast provider's answer arrives
            reads = grouped(rng, chunks)
        limit = rng.choice([NO_LIMIT, NO_LIMIT, 64, 400])
        got, n = decode_whole(reads, limit)
        assert got == decode(reads, limit, True), (reads, limit)
        taken += n
    assert taken >= 5  # the path is taken, not only refused


@pytest.mark.parametrize("read,expected", [
    (b"3\r\nabc\r\n2\r\nde\r\n", (b"abcde", False)),
    (b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", (b"abcde", True)),
    (b"1\r\n0\r\n0\r\n\r\n", (b"0", True)),  # a chunk whose data is "0"
    (b"a\r\n0123456789\r\n", (b"0123456789", False)),
    (b"3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n", None),  # trailer fields: feed_all
    (b"3\r\nabc\r\n0\r\n\r\n3\r\nabc\r\n", None),  # the body ends mid-read
    (b"3\r\nabc\r\n02\r\nde\r\n", None),  # a leading zero
    (b"3\r\nabc\r\n2;x\r\nde\r\n", None),  # an extension
    (b"3\r\nabc\r\nA\r\n0123456789\r\n", None),  # upper-case hex
    (b"3\r\nabc\r\n\r\n", None),  # an empty size line
    (b"3\r\nabc\r\n 2\r\nde\r\n", None),  # whitespace int() would take
    (b"3\r\nabc\r\n2\r\nd\r\n\r\n", None),  # data holding a CRLF: split apart, lengths differ
    (b"3\r\nabc\r\n2\r\nde", None),  # the last chunk not all here
])
def test_whole_takes_only_whole_plain_chunks(read, expected):
    body = ChunkedBody(NO_LIMIT, 1024)
    assert body.whole(read) == expected
    assert body.size == (0 if expected is None else len(expected[0]))  # None: nothing taken


def test_whole_takes_a_read_of_many_chunks_and_keeps_few_size_formats():
    """Past 64 chunks a read's size-line format is built, not kept: the cache stays small."""
    from kraken.h1framing import _SIZES
    datas = [b"data: %d\n\n" % i for i in range(300)]
    read = b"".join(b"%x\r\n%b\r\n" % (len(d), d) for d in datas) + b"0\r\n\r\n"
    body = ChunkedBody(NO_LIMIT, 1024)
    assert body.whole(read) == (b"".join(datas), True)
    assert whole_chunks_py(read) == (b"".join(datas), True)
    assert 300 not in _SIZES and all(n <= 64 for n in _SIZES)
    wrong = read.replace(b"b\r\ndata: 150", b"c\r\ndata: 150")  # one size line off by one
    assert ChunkedBody(NO_LIMIT, 1024).whole(wrong) is None
    assert whole_chunks_py(wrong) is None


def mutated_reads(rng: random.Random, count: int) -> list[bytes]:
    """Reads of whole chunks (with and without the last chunk), and each with a few bytes
    replaced, inserted or cut at random: CR, LF, hex digits, "0", anything."""
    reads = []
    for _ in range(count):
        chunks = stream(rng, plain=rng.choice([0.8, 0.95, 1.0])) or [b"1\r\na\r\n"]
        read = b"".join(chunks[:rng.randint(1, len(chunks))])
        if rng.random() < 0.3 and not read.endswith(b"0\r\n\r\n"):
            read += b"0\r\n\r\n"
        reads.append(read)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(read) + 1)
            piece = rng.choice([b"\r", b"\n", b"\r\n", b"0", b"a", b"A", b"f", b"1", b" ", b""])
            read = read[:at] + piece + read[at + rng.randint(0, 2):]
        reads.append(read)
    return reads + [b"", b"\r\n", b"0\r\n\r\n", b"\r\n0\r\n", b"1\r\na\r\n0\r\n\r\n",
                    b"1\r\na\r\n\r\n0\r\n\r\n", b"\r\n\r\n", b"1\r\n\r\n\r\n"]


@pytest.mark.skipif(whole_chunks_c is None, reason="the C extension is not built")
def test_the_c_parse_of_whole_chunks_answers_as_the_python_one():
    rng = random.Random(57)
    reads = mutated_reads(rng, 3000)
    taken = 0
    for read in reads:
        expected = whole_chunks_py(read)
        assert whole_chunks_c(read) == expected, read
        taken += expected is not None
    assert taken > 300  # both answers are exercised (464 of 6008 reads taken)
    with pytest.raises(TypeError):
        whole_chunks_c(bytearray(b"1\r\na\r\n"))
