"""Malformed and over-limit HTTP/1.1 requests: answered with an OpenAI-style error, the
connection closed, the handler never called (nothing can be smuggled past the listener).

In the style of h11's tests/test_connection.py: the bytes on the wire are the test."""
from __future__ import annotations

import asyncio

import pytest

from h1wire import connect, is_openai_error, parse_responses, read_to_eof, serve

pytestmark = pytest.mark.anyio

MAX_BODY = 1000
LIMITS = dict(max_body_bytes=MAX_BODY, head_timeout_s=30.0, body_idle_timeout_s=30.0)
"""Timeouts far beyond the read timeout below: a 408 can never pass for the tested status."""

H = b"Host: example.com\r\n"
POST = b"POST /v1/chat/completions HTTP/1.1\r\n" + H
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"

# (id, raw bytes sent in one write, expected status, connection closed?)
MALFORMED: list[tuple[str, bytes, int, bool]] = [
    # ---- limits
    ("head-over-16k", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 17_000 + b"\r\n\r\n",
     431, True),
    ("head-over-16k-unterminated", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 17_000,
     431, True),
    ("many-headers-over-16k", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(400)) + b"\r\n", 431, True),
    ("content-length-over-max-no-body-sent", POST + b"Content-Length: 1001\r\n\r\n", 413, True),
    ("content-length-huge", POST + b"Content-Length: 99999999999999999999999\r\n\r\n", 413, True),
    # past the 4300 digits int() takes: was a ValueError out of data_received (no answer)
    ("content-length-past-int-digits", POST + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n",
     413, True),
    ("chunked-total-over-max", CHUNKED + b"1f4\r\n" + b"a" * 500 + b"\r\n"
     + b"1f5\r\n" + b"b" * 501 + b"\r\n0\r\n\r\n", 413, True),
    ("chunked-declared-over-max-no-data", CHUNKED + b"3e9\r\n", 413, True),
    ("uri-over-max", b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, True),
    # ---- Content-Length / Transfer-Encoding smuggling
    ("te-and-cl", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("cl-and-te", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("duplicate-cl-same", POST + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400, True),
    ("duplicate-cl-different", POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     400, True),
    ("cl-list", POST + b"Content-Length: 3, 3\r\n\r\nabc", 400, True),
    ("cl-plus", POST + b"Content-Length: +3\r\n\r\nabc", 400, True),
    ("cl-hex", POST + b"Content-Length: 0x3\r\n\r\nabc", 400, True),
    ("cl-negative", POST + b"Content-Length: -1\r\n\r\n", 400, True),
    ("cl-empty", POST + b"Content-Length: \r\n\r\n", 400, True),
    ("cl-space-inside", POST + b"Content-Length: 1 0\r\n\r\nabcdefghij", 400, True),
    ("cl-vertical-tab", POST + b"Content-Length:\x0b3\r\n\r\nabc", 400, True),
    ("cl-folded", POST + b"Content-Length:\r\n 3\r\n\r\nabc", 400, True),
    ("te-xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-chunked-identity", POST + b"Transfer-Encoding: chunked, identity\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-identity-chunked", POST + b"Transfer-Encoding: identity, chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-duplicate", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-space-before-colon", POST + b"Transfer-Encoding : chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-tab-before-colon", POST + b"Transfer-Encoding\t: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-vertical-tab", POST + b"Transfer-Encoding:\x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400, True),
    ("te-form-feed", POST + b"Transfer-Encoding: chunked\x0c\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400, True),
    ("te-space-inside", POST + b"Transfer-Encoding: chun ked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400, True),
    ("te-quoted", POST + b'Transfer-Encoding: "chunked"\r\n\r\n3\r\nabc\r\n0\r\n\r\n', 400, True),
    ("te-leading-space-line", POST + b" Transfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("te-folded", POST + b"Transfer-Encoding:\r\n\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400, True),
    # ---- line framing and header syntax
    ("obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: bar\r\n baz\r\n\r\n", 400, True),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: bar\r\n\tbaz\r\n\r\n", 400, True),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: example.com\n\n", 400, True),
    ("bare-lf-one-header", b"GET / HTTP/1.1\r\nHost: example.com\nX-Foo: bar\r\n\r\n", 400, True),
    ("bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: example.com\r\n\n", 400, True),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: b\rar\r\n\r\n", 400, True),
    ("bare-cr-line-end", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: bar\r\rX-Bar: baz\r\n\r\n",
     400, True),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: b\x00ar\r\n\r\n", 400, True),
    ("nul-in-name", b"GET / HTTP/1.1\r\n" + H + b"X-F\x00oo: bar\r\n\r\n", 400, True),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400, True),
    ("cl-space-before-colon", POST + b"Content-Length : 3\r\n\r\nabc", 400, True),
    ("header-without-colon", b"GET / HTTP/1.1\r\n" + H + b"X-Foo bar\r\n\r\n", 400, True),
    ("duplicate-host", b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
     400, True),
    ("missing-host-http11", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, True),
    ("bad-request-line", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400, True),
    ("request-line-extra-token", b"GET / HTTP/1.1 x\r\n" + H + b"\r\n", 400, True),
    ("not-http", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
     400, True),
    # ---- chunked framing
    ("chunk-size-overflow-17-digits", CHUNKED + b"10000000000000005\r\nabcde\r\n0\r\n\r\n",
     400, True),
    ("chunk-size-overflow-20-digits", CHUNKED + b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
     400, True),
    ("chunk-size-overflow-21-digits", CHUNKED + b"100000000000000000003\r\nabc\r\n0\r\n\r\n",
     400, True),
    ("chunk-size-0x", CHUNKED + b"0x3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("chunk-size-negative", CHUNKED + b"-3\r\nabc\r\n0\r\n\r\n", 400, True),
    ("chunk-size-empty", CHUNKED + b"\r\nabc\r\n0\r\n\r\n", 400, True),
    ("chunk-size-not-hex", CHUNKED + b"g\r\nabc\r\n0\r\n\r\n", 400, True),
    ("chunk-ext-bare-lf", CHUNKED + b"3;ext=1\nabc\r\n0\r\n\r\n", 400, True),
    ("chunk-size-bare-lf", CHUNKED + b"3\nabc\r\n0\r\n\r\n", 400, True),
    ("chunk-data-not-crlf-terminated", CHUNKED + b"3\r\nabcXX0\r\n\r\n", 400, True),
    ("chunk-data-bare-lf-terminated", CHUNKED + b"3\r\nabc\n0\r\n\r\n", 400, True),
    ("chunk-data-longer-than-size", CHUNKED + b"3\r\nabcdef\r\n0\r\n\r\n", 400, True),
]


@pytest.mark.parametrize("raw, status, closed", [pytest.param(*c[1:], id=c[0]) for c in MALFORMED])
async def test_malformed_request_is_refused_and_closed(raw: bytes, status: int, closed: bool):
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(raw)
            data = await read_to_eof(reader) if closed else await reader.read(65536)
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, status), resp
        assert resp.headers[b"connection"] == b"close"
        assert server.calls == []


@pytest.mark.parametrize("sizes", [[5], [1, 2, 3], [MAX_BODY], [400, 600]])
async def test_chunked_body_up_to_the_limit_is_accepted(sizes: list[int]):
    body = b"".join(b"%x\r\n%s\r\n" % (n, b"c" * n) for n in sizes) + b"0\r\n\r\n"
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(CHUNKED + body)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert server.calls[0].body == b"c" * sum(sizes)


async def test_413_from_content_length_is_answered_before_the_body_is_sent():
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(POST + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n"
                         % (MAX_BODY + 1))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 413 ")  # no "100 Continue" first
            writer.write(b"x" * (MAX_BODY + 1))  # a client that sends anyway is not reset
            rest = await read_to_eof(reader)
        (resp,) = parse_responses(head + rest)
        assert is_openai_error(resp, 413)
        assert resp.json()["error"]["code"] == "request_too_large"
        assert server.calls == []


async def test_error_response_survives_a_large_unread_body():
    """The refused body is still arriving when the 413 is sent: the connection must close
    without RST (lingering close), or the client loses the 413."""
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(POST + b"Content-Length: 4000000\r\n\r\n" + b"x" * 4_000_000)
            data = await read_to_eof(reader, timeout=10)
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, 413)
        assert server.calls == []


async def test_a_valid_request_after_an_error_is_never_read():
    """A rejected request closes the connection: the pipelined request behind it is dropped."""
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(POST + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
                         + b"GET /next HTTP/1.1\r\n" + H + b"\r\n")
            data = await read_to_eof(reader)
        assert [r.status for r in parse_responses(data)] == [400]
        assert server.calls == []


async def test_malformed_request_after_a_good_one_on_the_same_connection():
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"HEAD /first HTTP/1.1\r\n" + H + b"\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.write(b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n")
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        # the previous request was HEAD: the error still carries its body
        assert is_openai_error(resp, 400)
        assert [r.path for r in server.calls] == ["/first"]


async def test_leading_empty_line_before_request_line_is_ignored():
    """RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request."""
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"\r\nGET /x HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        assert resp.status == 200 and resp.body == b"/x 0"


async def test_error_message_never_echoes_the_request():
    secret = b"sk-secret-0123456789"
    async with serve(**LIMITS) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\n" + H
                         + b"Authorization : Bearer " + secret + b"\r\n\r\n")
            data = await read_to_eof(reader)
        assert parse_responses(data)[0].status == 400
        assert secret not in data
