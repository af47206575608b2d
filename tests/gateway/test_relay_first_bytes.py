"""A streamed answer that arrives whole in one provider read reaches the client before Kraken
makes its record, and completes only after the record is journalled; a stream whose head was
already sent keeps its last bytes and its end together, after the record. What only counts the
record (the log line, billing's snapshot, metrics) comes after the end. Over real sockets: the
client's kernel buffer is looked at (MSG_PEEK) at the moment the journal is written and at the
moment the log line is emitted."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest

from harness import TEST_KEY, kraken_mapping, running_kraken
from kraken.gateway.relay import Relay
from kraken.gateway.request_log import RequestLog
from kraken.meter.journal import Journal
from kraken.upstream.connection import UpstreamConnection
from rawprovider import SSE_HEAD, peek, scripted_provider

pytestmark = pytest.mark.anyio

EVENTS = [b'data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',
          b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
          b'"total_tokens":4}}\n\n', b"data: [DONE]\n\n"]
CHUNKS = [b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS]


async def stream_with_a_look_at_the_record(tmp_path, monkeypatch, writes: list[bytes], until: bytes,
                                          at_end: list[bytes] | None = None):
    """One streamed request; returns (the client's bytes when the record was journalled, the
    whole response, the provider reads Kraken made). ``at_end``: gets the client's bytes when
    the relay began handling the provider's end (``Relay.on_end``)."""
    reads: list[bytes] = []
    at_record: list[bytes] = []
    at_log: list[bytes] = []
    got = bytearray()  # what the client has read
    client = socket.socket()
    client.setblocking(False)
    received = UpstreamConnection.data_received
    append = Journal.append

    def counted(self, data):
        reads.append(data)
        received(self, data)

    def journalled(self, rec):
        at_record.append(peek(client, bytes(got), until))
        append(self, rec)

    emit = RequestLog.emit

    def logged(self, call, rec):
        at_log.append(peek(client, bytes(got), b"\r\n0\r\n\r\n"))
        emit(self, call, rec)

    monkeypatch.setattr(UpstreamConnection, "data_received", counted)
    monkeypatch.setattr(Journal, "append", journalled)
    monkeypatch.setattr(RequestLog, "emit", logged)
    if at_end is not None:
        on_end = Relay.on_end

        def ending(self):
            at_end.append(peek(client, bytes(got), until))
            on_end(self)

        monkeypatch.setattr(Relay, "on_end", ending)
    server, port = await scripted_provider([writes], 0.05)  # each write a read of its own
    req = json.dumps({"model": "mock-gpt", "stream": True, "stream_options": {"include_usage": True},
                      "messages": [{"role": "user", "content": "hi"}]}).encode()
    loop = asyncio.get_running_loop()
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            await loop.sock_connect(client, ("127.0.0.1", k.port))
            await loop.sock_sendall(client, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                                    b"content-type: application/json\r\nauthorization: Bearer %s\r\n"
                                    b"content-length: %d\r\n\r\n%s" % (TEST_KEY.encode(), len(req), req))
            while not got.endswith(b"\r\n0\r\n\r\n"):
                more = await asyncio.wait_for(loop.sock_recv(client, 1 << 16), 10)
                assert more, got
                got += more
    client.close()
    assert len(at_record) == len(at_log) == 1
    assert at_log[0] == bytes(got)  # counted (log line, billing, metrics) once the client had it all
    return at_record[0], bytes(got), reads


async def test_a_whole_answer_in_one_read_reaches_the_client_before_the_record(tmp_path, monkeypatch):
    content = b"%x\r\n%s\r\n" % (len(b"".join(EVENTS)), b"".join(EVENTS))  # one chunk, re-framed
    seen, got, reads = await stream_with_a_look_at_the_record(
        tmp_path, monkeypatch, [SSE_HEAD + b"".join(CHUNKS) + b"0\r\n\r\n"], content)
    assert len(reads) == 1  # the case under test: head, answer and end in one provider read
    head = got[:got.index(b"\r\n\r\n") + 4]
    # at the journal write the client had the head and the whole answer, not the end
    assert seen == head + content
    assert got == seen + b"0\r\n\r\n"


async def test_a_whole_answer_in_one_read_leaves_before_its_end_is_handled(tmp_path, monkeypatch):
    # written as the read's data is relayed, not once the provider's end has been handled
    content = b"%x\r\n%s\r\n" % (len(b"".join(EVENTS)), b"".join(EVENTS))
    at_end: list[bytes] = []
    seen, got, reads = await stream_with_a_look_at_the_record(
        tmp_path, monkeypatch, [SSE_HEAD + b"".join(CHUNKS) + b"0\r\n\r\n"], content, at_end)
    assert len(reads) == 1
    head = got[:got.index(b"\r\n\r\n") + 4]
    assert at_end == [head + content] and seen == head + content
    assert got == seen + b"0\r\n\r\n"


async def test_a_stream_whose_head_was_sent_ends_with_its_last_bytes_after_the_record(
        tmp_path, monkeypatch):
    # the head and the first chunk, then the rest and the end in one read
    seen, got, reads = await stream_with_a_look_at_the_record(
        tmp_path, monkeypatch, [SSE_HEAD + CHUNKS[0], b"".join(CHUNKS[1:]) + b"0\r\n\r\n"], CHUNKS[0])
    assert len(reads) == 2
    # at the journal write the client had the head and the first chunk only: the last read's
    # bytes wait to leave with the end, in the same write (no write of their own)
    assert seen.endswith(b"\r\n\r\n" + CHUNKS[0])
    assert got.startswith(seen) and got.endswith(b"0\r\n\r\n")
    assert b"".join(EVENTS[1:]) in got[len(seen):]
