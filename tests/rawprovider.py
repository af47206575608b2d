"""A provider scripted byte for byte on a raw socket, and a raw streamed chat request through
Kraken: for tests that decide how a provider's bytes fall into Kraken's reads."""
from __future__ import annotations

import asyncio
import json
import select
import socket
import time

from harness import TEST_KEY

SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def read_request(reader: asyncio.StreamReader) -> None:
    """Read one request, its head and its Content-Length body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)


async def scripted_provider(replies: list[list[bytes]], pause_s: float):
    """Answers each request (keep-alive) with the next reply: its first write at once, each
    later one after ``pause_s``, so that each tends to be a read of its own on Kraken's side.
    Returns (server, port)."""
    async def on_conn(reader, writer):
        try:
            while replies:
                await read_request(reader)
                first, *rest = replies.pop(0)
                writer.write(first)
                for piece in rest:
                    await writer.drain()
                    await asyncio.sleep(pause_s)
                    writer.write(piece)
                await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # Kraken closed an idle pooled connection
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def stream_through(port: int, *, include_usage: bool = False, headers: bytes = b"") -> bytes:
    """A streamed chat request to Kraken on a fresh connection (``headers``: extra header lines,
    each ending in CRLF); the response's bytes as received, up to its last chunk."""
    req = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    if include_usage:
        req["stream_options"] = {"include_usage": True}
    body = json.dumps(req).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"%sauthorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                 % (headers, TEST_KEY.encode(), len(body), body))
    got = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 10)
    writer.close()
    return got


def peek(sock: socket.socket, read: bytes, until: bytes, seconds: float = 2.0) -> bytes:
    """What the client has received so far: ``read`` (consumed) and what waits in its socket;
    waits (bounded) until that ends with ``until`` (the kernel may take a moment to move
    loopback bytes)."""
    deadline = time.monotonic() + seconds
    while True:
        select.select([sock], [], [], 0.02)
        try:
            seen = read + sock.recv(1 << 16, socket.MSG_PEEK)
        except BlockingIOError:
            seen = read
        if seen.endswith(until) or time.monotonic() > deadline:
            return seen
