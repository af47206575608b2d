"""A provider connection the relay gives back to the pool is ready for the next exchange:
whatever the client's flow control did to it during the last one is undone."""
from __future__ import annotations

import asyncio
import gc
import json
import socket

import pytest

from harness import (auth_headers, http, kraken_mapping, running_kraken, running_mock, wait_for,
                     wait_rows)

pytestmark = pytest.mark.anyio


def chat(content: str) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       "mock": {"content": content}}).encode()


async def test_a_connection_paused_by_the_answers_last_write_is_reused_reading(tmp_path):
    """A held answer (``CostSink``) leaves in one write at its end; to a client that reads
    slowly that write pauses the provider connection, after the response is complete. Given
    back paused, the next request on it was never read: it hung for the read timeout."""
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, server={"write_buffer_high": 16384})
        doc["providers"]["mockai"]["read_timeout_s"] = 30.0
        async with running_kraken(doc) as k:
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # small segments: Kraken's kernel sizes its send buffer by them (not ~2.6 MB)
            slow.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            slow.connect(("127.0.0.1", k.port))
            body = chat("x" * 900_000)  # held whole (under MAX_HELD), far past the buffers
            slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\n"
                         b"authorization: %s\r\ncontent-length: %d\r\n\r\n%s"
                         % (auth_headers()["Authorization"].encode(), len(body), body))
            try:
                await wait_for(lambda: len(mock.responses) == 1)
                r = await http(k.port, "POST", "/v1/chat/completions", chat("again"),
                               auth_headers(), timeout=5)
                assert r.status == 200
                assert len(mock.requests) == 2 and len(mock._conns) == 1  # reused, not retried
            finally:
                slow.close()


async def early_answering_provider(answered: asyncio.Event, heads: list[bytes],
                                   close: bool = False):
    """An HTTP/1.1 provider that answers an upload 200 as soon as its first body bytes came,
    then reads the rest of that body (its Content-Length), as a server must before the next
    request on the connection (``close``: it says Connection: close and closes instead).
    Keeps every request head it parsed in ``heads``."""
    async def on_conn(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                first = await reader.read(1)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%s"
                             b"content-length: %d\r\n\r\n%s"
                             % (b"connection: close\r\n" if close else b"", len(ANSWER), ANSWER))
                answered.set()
                if close:
                    break
                await reader.readexactly(length - len(first))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # Kraken cut the connection: the upload's rest never comes
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


ANSWER = b'{"text":"early"}'
FORM_HEAD = (b"--b1\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
             b"--b1\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
             b"Content-Type: audio/wav\r\n\r\n")
FORM_TAIL = b"\0" * 1000 + b"\r\n--b1--\r\n"


async def upload(port: int, answered: asyncio.Event) -> bytes:
    """An upload whose client sends the rest of its body only after the provider answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: t\r\nauthorization: %s\r\n"
                 b"content-type: multipart/form-data; boundary=b1\r\ncontent-length: %d\r\n\r\n%s"
                 % (auth_headers()["Authorization"].encode(), len(FORM_HEAD + FORM_TAIL),
                    FORM_HEAD))
    await asyncio.wait_for(answered.wait(), 5)
    answer = await asyncio.wait_for(reader.readuntil(ANSWER), 5)
    writer.write(FORM_TAIL)
    writer.close()
    return answer


async def test_a_connection_answered_before_its_upload_ended_is_not_reused(tmp_path):
    """The provider's early 200 ends the exchange while the upload is still being relayed:
    that connection's request is unfinished (the provider still reads its body). Reused, the
    next request's bytes were read by the provider as the rest of the last one's body."""
    answered, heads = asyncio.Event(), []
    server, port = await early_answering_provider(answered, heads)
    async with server:
        doc = kraken_mapping(tmp_path, port)
        doc["providers"]["mockai"].update(kind="openai", models=["whisper-1"])
        async with running_kraken(doc) as k:
            assert (await upload(k.port, answered)).startswith(b"HTTP/1.1 200 ")
            answered.clear()
            assert (await upload(k.port, answered)).startswith(b"HTTP/1.1 200 ")
            assert len(heads) == 2 and all(h.startswith(b"POST /v1/audio/") for h in heads)


async def test_an_upload_answered_before_its_end_leaves_no_failure_unretrieved(tmp_path):
    """The answer ends the exchange, then the client's body is cut (its connection closes
    after the answer): the pump's failure is moot, not a "Task exception was never
    retrieved" error logged with its traceback for every such upload."""
    answered, heads = asyncio.Event(), []
    server, port = await early_answering_provider(answered, heads, close=True)
    async with server:
        doc = kraken_mapping(tmp_path, port)
        doc["providers"]["mockai"].update(kind="openai", models=["whisper-1"])
        async with running_kraken(doc) as k:
            assert (await upload(k.port, answered)).startswith(b"HTTP/1.1 200 ")
            await wait_rows(k.db_path, 1)
        gc.collect()  # a failed task never retrieved is reported when it is freed
