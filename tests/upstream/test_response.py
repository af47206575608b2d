"""The provider response parser: framing, strictness, and any split of the byte stream."""
from __future__ import annotations

import pytest

from kraken.upstream.response import ResponseError, ResponseParser


class Collect:
    def __init__(self):
        self.status, self.headers, self.body, self.ended, self.data_calls = 0, [], b"", 0, 0

    def on_head(self, status, headers):
        self.status, self.headers = status, headers

    def on_data(self, data):
        self.body += data
        self.data_calls += 1

    def on_end(self):
        self.ended += 1


def parse(raw: bytes, splits=None, eof=False, **kw):
    sink = Collect()
    parser = ResponseParser(sink, **kw)
    pieces = [raw] if splits is None else [raw[i:j] for i, j in zip([0] + splits, splits + [len(raw)])]
    for piece in pieces:
        parser.feed(piece)
    if eof:
        parser.feed_eof()
    return sink, parser


SSE = b"data: {\"a\":1}\n\ndata: [DONE]\n\n"
CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"d\r\ndata: {\"a\":1}\r\n4;ext=1\r\n\n\nda\r\nC\r\nta: [DONE]\n\n\r\n0\r\nx-trailer: 1\r\n\r\n")
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(SSE), SSE)


@pytest.mark.parametrize("raw", [CHUNKED, LENGTH], ids=["chunked", "content-length"])
def test_every_split_point_gives_the_same_body(raw):
    for cut in range(1, len(raw)):
        sink, parser = parse(raw, [cut])
        assert (sink.status, sink.body, sink.ended) == (200, SSE, 1), cut
        assert parser.keep_alive and parser.done


def test_byte_by_byte():
    sink, _ = parse(CHUNKED, list(range(1, len(CHUNKED))))
    assert sink.body == SSE and sink.ended == 1


def test_one_feed_gives_one_on_data_call():
    sink, _ = parse(CHUNKED)
    assert sink.data_calls == 1 and sink.body == SSE


def test_headers_are_lowercased():
    sink, _ = parse(LENGTH)
    assert (b"content-length", str(len(SSE)).encode()) in sink.headers


def test_close_delimited_body_ends_at_eof_and_is_not_reusable():
    sink, parser = parse(b"HTTP/1.1 200 OK\r\n\r\nhello", eof=True)
    assert sink.body == b"hello" and sink.ended == 1 and not parser.keep_alive


def test_connection_close_and_http10_are_not_reusable():
    _, p1 = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    _, p2 = parse(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not p1.keep_alive and not p2.keep_alive


def test_interim_100_is_skipped():
    sink, _ = parse(b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH)
    assert sink.status == 200 and sink.body == SSE


def test_204_and_head_have_no_body():
    sink, parser = parse(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert sink.ended == 1 and parser.done
    sink, _ = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", no_body=True)
    assert sink.ended == 1 and sink.body == b""


def test_eof_mid_body_is_an_error():
    with pytest.raises(ResponseError):
        parse(LENGTH[:-3], eof=True)


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 17 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Header : x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
], ids=["hex", "0x", "size-overflow", "missing-crlf", "gzip-te", "te+cl", "dup-cl", "plus-cl",
        "space-before-colon", "no-colon", "http2-line", "bad-code"])
def test_malformed_responses_raise(raw):
    with pytest.raises(ResponseError):
        parse(raw)


def test_oversized_head_raises():
    with pytest.raises(ResponseError):
        parse(b"HTTP/1.1 200 OK\r\n" + b"x-a: b\r\n" * 10000)


@pytest.mark.parametrize("body", [
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
    b"0\r\nbad trailer\r\n\r\n",
], ids=["space-without-extension", "nul-in-extension", "bare-lf-size-line", "malformed-trailer"])
def test_chunked_framing_is_as_strict_as_for_requests(body):
    """Responses go through the request side's chunked decoder (kraken.h1framing)."""
    with pytest.raises(ResponseError):
        parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)


def test_bytes_after_a_complete_response_make_the_connection_not_reusable():
    sink, parser = parse(LENGTH + b"HTTP/1.1 200 OK\r\n")
    assert sink.body == SSE and sink.ended == 1 and parser.done and not parser.keep_alive


HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_one_chunk_per_read_gives_the_body_and_the_end():
    """A paced stream: each read is exactly one chunk (the decoder's one-step path)."""
    events = [b"data: {\"n\":%d}\n\n" % i for i in range(12)]
    sink, parser = parse(HEAD_CHUNKED, eof=False)
    for event in events:
        parser.feed(b"%X\r\n%s\r\n" % (len(event), event))
    assert sink.data_calls == len(events) and sink.body == b"".join(events) and not sink.ended
    parser.feed(b"0\r\n\r\n")
    assert sink.ended == 1 and parser.done and parser.keep_alive


@pytest.mark.parametrize("read", [
    b"5\r\nhelloXX", b"5\r\nhello\n\r", b"+5\r\nhello\r\n", b"5 \r\nhello\r\n", b"0x5\r\nhello\r\n",
    b"1_0\r\n0123456789abcdef\r\n", b"-5\r\nhello\r\n", b"\r\n5\r\nhello\r\n",
    b"0" * 17 + b"5\r\nhello\r\n", b"8000000000000000\r\nabc\r\n", b"f" * 16 + b"\r\nabc\r\n0\r\n\r\n",
    b"5\r\nhelloXXX", b"5\r\nhelloXX\r\n", b"5\r\nhello\r\n5 \r\nhello\r\n",
    b"5\r\nhello\r\n6\r\nhello\r\n\r\n",
], ids=["no-crlf", "lf-cr", "plus", "space", "0x", "underscore", "minus", "empty-line", "17-digits",
        "16-digit-overflow", "16-digit-overflow-then-more", "no-crlf-more-data",
        "no-crlf-then-crlf", "bad-second-size-line", "second-chunk-short"])
def test_a_malformed_chunk_alone_in_its_read_raises(read):
    sink, parser = parse(HEAD_CHUNKED)
    with pytest.raises(ResponseError):
        parser.feed(read)
    assert sink.body == b""


def test_only_one_chunk_reads_with_a_plain_size_line_go_to_on_chunk_with_their_frame():
    sink = Collect()
    parser = ResponseParser(sink)
    chunks: list[tuple[bytes, bytes]] = []
    parser.on_chunk = lambda data, frame: chunks.append((data, frame))
    event = b'data: {"a":1}\n\n'  # 15 bytes: f
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    reads = [b"f\r\n%s\r\n" % event, b"F\r\n%s\r\n" % event, b"0f\r\n%s\r\n" % event,
             b"f;x=1\r\n%s\r\n" % event, b"f\r\n%s\r\n0\r\n\r\n" % event]
    for read in reads:
        parser.feed(read)
    # plain size line: the read itself; upper-case, zero-padded, an extension: on_data (the
    # client is sent those re-framed), as is the read that ends the body
    assert chunks == [(event, reads[0])]
    assert sink.body == event * 4 and sink.data_calls == 4 and sink.ended == 1


def test_reads_of_whole_plain_chunks_go_to_on_chunk_as_one_and_an_ending_one_to_on_data():
    sink = Collect()
    parser = ResponseParser(sink)
    chunks: list[tuple[bytes, bytes]] = []
    parser.on_chunk = lambda data, frame: chunks.append((data, frame))
    a, b = b'data: {"a":1}\n\n', b'data: {"b":22}\n\n'
    frames = b"f\r\n%s\r\n10\r\n%s\r\n" % (a, b)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    mixed = b"f\r\n%s\r\n10;x=1\r\n%s\r\n" % (a, b)  # an extension: not as Kraken writes it
    for read in (head + frames, frames, mixed, frames + b"0\r\n\r\n"):
        parser.feed(read)
    # several plain chunks: one call with the read as their frames (with the head: after it);
    # not all plain: on_data; the read that ends the body: on_data, then the end
    assert chunks == [(a + b, frames), (a + b, frames)]
    assert sink.body == (a + b) * 2 and sink.data_calls == 2 and sink.ended == 1
    assert parser.done and parser.keep_alive


def fields_by_line(head: bytes):
    """The field rules one line at a time (the parser's spec): (headers, keep_alive), or None
    for a head it must refuse."""
    headers, keep_alive = [], True
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b"\n" in line or b"\r" in line:
            return None
        headers.append((name.lower(), value.strip()))
        if name.lower() == b"connection" and b"close" in value.lower():
            keep_alive = False
    if not any(name == b"content-length" for name, _ in headers):
        keep_alive = False  # a close-delimited body
    return headers, keep_alive


PROVIDER_HEAD = (b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 03:00:00 GMT\r\n"
                 b"Content-Type: text/event-stream; charset=utf-8\r\nContent-Length: 0\r\n"
                 b"Connection: keep-alive\r\naccess-control-expose-headers: X-Request-ID\r\n"
                 b"openai-processing-ms: 123\r\nx-ratelimit-remaining-tokens: 29999990\r\n"
                 b"set-cookie: __cf_bm=abc; path=/; HttpOnly; Secure; SameSite=None\r\n"
                 b"X-Odd:  \t spaced \t\r\nx-empty:\r\nx-colons: a:b::c\r\nserver: cloudflare\r\n"
                 b"alt-svc: h3=\":443\"; ma=86400")


@pytest.mark.parametrize("seed", range(20))
def test_field_lines_match_the_line_by_line_rules(seed):
    """Heads with odd bytes put anywhere (bare CR or LF, spaces, tabs, colons, obs-fold, lines
    with no colon or no name) are refused, or read, exactly as the rules say line by line."""
    import random
    rng = random.Random(seed)
    refused = 0
    for _ in range(300):
        head = bytearray(PROVIDER_HEAD)
        for _ in range(rng.randint(0, 3)):
            at = rng.randrange(len(b"HTTP/1.1 200 OK\r\n"), len(head) + 1)
            head[at:at] = rng.choice([b"\r", b"\n", b" ", b"\t", b":", b"\x0b", b"\r\n", b"\r\n ",
                                      b"\r\n:", b"\r\nx", b"\r\nConnection: close", b"a"])
        head = bytes(head)
        if b"\r\n\r\n" in head + b"\r\n":
            continue  # the head would end there
        expected = fields_by_line(head)
        sink = Collect()
        parser = ResponseParser(sink)
        try:
            parser.feed(head + b"\r\n\r\n")
        except ResponseError:
            refused += 1
            assert expected is None or (b"content-length", b"0") not in expected[0], head
            continue
        assert (sink.headers, parser.keep_alive) == expected, head
    assert refused > 20
