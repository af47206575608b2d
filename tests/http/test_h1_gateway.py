"""Through the real gateway in front of the mock provider: a malformed or over-limit request
is refused at the listener and nothing is sent upstream."""
from __future__ import annotations

import asyncio
import json

import pytest

from h1wire import connect, is_openai_error, parse_responses, read_to_eof
from harness import TEST_KEY, kraken_mapping, running_kraken, running_mock
from rawprovider import scripted_provider

pytestmark = pytest.mark.anyio

BODY = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}).encode()
HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: kraken\r\n"
        b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\n")


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


SMUGGLING: list[tuple[str, bytes, int]] = [
    ("te-and-cl", HEAD + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
     % len(chunked(BODY)) + chunked(BODY), 400),
    ("duplicate-cl", HEAD + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
     % (len(BODY), len(BODY)) + BODY, 400),
    ("te-obfuscated", HEAD + b"Transfer-Encoding: xchunked\r\n\r\n" + chunked(BODY), 400),
    ("obs-fold", HEAD + b"X-Foo: a\r\n b\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY, 400),
    ("bare-lf", HEAD.replace(b"\r\n", b"\n") + b"Content-Length: %d\n\n" % len(BODY) + BODY, 400),
    ("chunk-0x", HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x%x\r\n%s\r\n0\r\n\r\n"
     % (len(BODY), BODY), 400),
    ("body-over-max-by-length", HEAD + b"Content-Length: 1001\r\n\r\n", 413),
    ("body-over-max-chunked", HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
     + b"200\r\n" + b" " * 512 + b"\r\n" + b"200\r\n" + b" " * 512 + b"\r\n0\r\n\r\n", 413),
    ("head-over-16k", HEAD + b"X-Big: " + b"a" * 17_000 + b"\r\n\r\n", 431),
]


@pytest.fixture
async def stack(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, server={"max_body_bytes": 1000})
        async with running_kraken(doc) as k:
            yield mock, k


async def test_well_formed_request_reaches_the_provider(stack):
    """The control: the same request, well framed, is relayed (so an empty mock means
    'refused', not 'never routed')."""
    mock, k = stack
    async with connect(k.port) as (reader, writer):
        writer.write(HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY)
        data = await read_to_eof(reader, timeout=10)
    (resp,) = parse_responses(data)
    assert resp.status == 200, resp.body
    assert len(mock.requests) == 1


@pytest.mark.parametrize("raw, status", [pytest.param(*c[1:], id=c[0]) for c in SMUGGLING])
async def test_malformed_request_never_reaches_the_provider(stack, raw: bytes, status: int):
    mock, k = stack
    async with connect(k.port) as (reader, writer):
        writer.write(raw)
        data = await read_to_eof(reader, timeout=10)
    (resp,) = parse_responses(data)
    assert is_openai_error(resp, status), resp
    assert resp.headers[b"connection"] == b"close"
    assert len(mock.requests) == 0


async def test_smuggled_second_request_is_not_relayed(stack):
    """CL.TE: with TE winning, the 'body' would hide a second request. Neither is relayed."""
    mock, k = stack
    hidden = HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    raw = (HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"0\r\n\r\n" + hidden)
    async with connect(k.port) as (reader, writer):
        writer.write(raw)
        data = await read_to_eof(reader, timeout=10)
    assert [r.status for r in parse_responses(data)] == [400]
    assert len(mock.requests) == 0


UPLOAD = (b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: kraken\r\n"
          b"Authorization: Bearer not-a-key\r\n"
          b"Content-Type: multipart/form-data; boundary=b1\r\n"
          b"Content-Length: 1000000\r\n\r\n--b1\r\n")


async def test_an_upload_answered_before_its_body_ended_says_connection_close(stack):
    """A refused upload is answered while most of its body is still to come: Kraken closes
    and drains the rest, so its head must say so (RFC 9112 9.6), or a client that reads the
    answer may send its next request on a connection that will be closed under it."""
    mock, k = stack
    async with connect(k.port) as (reader, writer):
        writer.write(UPLOAD)  # 1 MB announced, 6 bytes sent: the rest never comes
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert b"\r\nconnection: close\r\n" in head.lower(), head
        writer.write(b"x" * 1000)  # drained, never read as a request
        data = head + await read_to_eof(reader, timeout=10)
    (resp,) = parse_responses(data)
    assert is_openai_error(resp, 401) and resp.headers[b"connection"] == b"close"
    assert len(mock.requests) == 0


async def test_a_whole_request_keeps_its_connection_and_says_nothing_of_closing(stack):
    """The control: a request read whole is answered without ``connection`` and the
    connection carries the next request."""
    mock, k = stack
    async with connect(k.port) as (reader, writer):
        for _ in range(2):
            writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b"\r\nconnection:" not in head.lower(), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.wait_for(reader.readexactly(length), 10)
    assert len(mock.requests) == 2


async def test_a_providers_204_reaches_the_client_without_body_framing(tmp_path):
    """A 204 has no body (RFC 9110 15.3.5): a streamed request's 204 from the provider was
    relayed with transfer-encoding: chunked and a last chunk, bytes a client reads as the start
    of the next response on the connection. It goes out with no framing and no body, and the
    connection carries the next request."""
    body = json.dumps({"model": "mock-gpt", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    server, port = await scripted_provider([[b"HTTP/1.1 204 No Content\r\n\r\n"]], 0)
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            async with connect(k.port) as (reader, writer):
                writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 204 "), head
                assert b"transfer-encoding" not in head.lower(), head
                assert b"content-length" not in head.lower(), head
                writer.write(b"GET /v1/models HTTP/1.1\r\nHost: kraken\r\nAuthorization: Bearer "
                             + TEST_KEY.encode() + b"\r\nConnection: close\r\n\r\n")
                (resp,) = parse_responses(await read_to_eof(reader, timeout=10))
    assert resp.status == 200 and resp.json()["object"] == "list"
