"""Raw-socket helpers for the HTTP/1.1 listener tests: a real ``H1Connection`` on a loopback
port (each request's sink an ``H1Exchange``), a recording handler, and a small independent
parser for what the server sends."""
from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from kraken.config import ServerConfig
from kraken.http.exchange import Request
from kraken.http.h1 import H1Connection
from kraken.http.h1exchange import H1Exchange

Handler = Callable[[Request, H1Exchange], Awaitable[None]]


async def echo_length(req: Request, sink: H1Exchange) -> None:
    """Answer 200 with ``<path> <body length>`` as a Content-Length body."""
    body = b"%s %d" % (req.path.encode(), len(req.body))
    sink.start(200, [(b"content-type", b"text/plain")], len(body))
    sink.write(body)
    sink.end()


@dataclass
class Server:
    port: int
    calls: list[Request] = field(default_factory=list)
    conns: set = field(default_factory=set)


@contextlib.asynccontextmanager
async def serve(handler: Handler = echo_length, **cfg) -> AsyncIterator[Server]:
    """A listener on 127.0.0.1 whose handler records every Request it is given."""
    loop = asyncio.get_running_loop()
    server = Server(0)

    async def recording(req: Request, sink: H1Exchange) -> None:
        server.calls.append(req)
        await handler(req, sink)

    listener = await loop.create_server(
        lambda: H1Connection(recording, ServerConfig(**cfg), server.conns), "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for conn in list(server.conns):
            conn.abort()
        await listener.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run


@contextlib.asynccontextmanager
async def connect(port: int, rcvbuf: int | None = None
                  ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the server closes; fails (TimeoutError) if it never does.

    A reset instead of a clean close fails too: the client could have lost the response."""
    chunks = []
    async with asyncio.timeout(timeout):
        while data := await reader.read(65536):
            chunks.append(data)
    return b"".join(chunks)


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    raw_body: bytes = b""

    def json(self):
        import json

        return json.loads(self.body)


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\Z")


def parse_responses(data: bytes, eof: bool = True) -> list[Response]:
    """Split ``data`` into responses (Content-Length, chunked or close-delimited bodies),
    checking the framing strictly: chunk sizes, CRLFs and the final zero chunk."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        lines = data[pos:end].split(b"\r\n")
        m = _STATUS.match(lines[0])
        assert m, lines[0]
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            assert name.lower() not in headers, f"duplicate header {name!r}"
            headers[name.lower()] = value.strip()
        pos = end + 4
        status = int(m.group(1))
        if status < 200:
            out.append(Response(status, headers, b""))
            continue
        if b"content-length" in headers:
            n = int(headers[b"content-length"])
            body = data[pos:pos + n]
            assert len(body) == n, "truncated body"
            raw, pos = body, pos + n
        elif headers.get(b"transfer-encoding") == b"chunked":
            body, start = decode_chunked(data, pos), pos
            raw = data[start:start + _chunked_len(data, start)]
            pos = start + len(raw)
        else:
            assert eof, "close-delimited body without EOF"
            body = raw = data[pos:]
            pos = len(data)
        out.append(Response(status, headers, body, raw))
    return out


def decode_chunked(data: bytes, pos: int = 0) -> bytes:
    parts = []
    while True:
        eol = data.index(b"\r\n", pos)
        size_text = data[pos:eol]
        assert re.fullmatch(rb"[0-9a-f]+", size_text), size_text
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            assert data[pos:pos + 2] == b"\r\n", "no CRLF after the last chunk"
            return b"".join(parts)
        parts.append(data[pos:pos + size])
        assert len(parts[-1]) == size, "truncated chunk"
        assert data[pos + size:pos + size + 2] == b"\r\n", "chunk not followed by CRLF"
        pos += size + 2


def _chunked_len(data: bytes, start: int) -> int:
    pos = start
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol], 16)
        pos = eol + 2 + size + 2
        if size == 0:
            return pos - start


def is_openai_error(resp: Response, status: int) -> bool:
    payload = resp.json()
    err = payload["error"]
    return (resp.status == status and set(payload) == {"error"}
            and set(err) == {"message", "type", "param", "code"}
            and isinstance(err["message"], str) and err["message"]
            and isinstance(err["type"], str)
            and resp.headers[b"content-type"] == b"application/json")
