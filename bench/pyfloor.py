"""The least a Python relay does: bench/run.py's ``pyfloor`` column. Not a gateway.

Each request is forwarded to the mock provider over a pooled keep-alive connection, and the
answer's bytes go to the client as they arrive: uvloop, one Python callback per provider read,
no key check, no limits, no record, no framing check beyond finding the answer's end. Its row
in the table is what any Python relay on uvloop pays on this machine; Kraken's distance from it
is Kraken's own work, and its distance from nginx is the interpreter's.

    python bench/pyfloor.py --port 8081 --upstream-port 8080
    python bench/pyfloor.py --port 8081 --upstream-port 8080 --work-us 100

``--work-us N`` spends N µs of CPU on each request before forwarding it, standing in for a
gateway's per-request work (keys, limits, routing, records): how the burst row's TTFB grows with
it says how much work before the first byte a target like "x1.2 nginx" leaves room for.

Shortcuts a gateway may not take: a chunked answer is taken to end at a read ending in the last
chunk (``0`` CRLF CRLF), which holds for the mock's SSE streams; a client that closes mid-answer
drops its provider connection.
"""
from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

MAX_HEAD = 64 * 1024
WORK_S = 0.0
"""CPU seconds spent per request before it is forwarded (``--work-us``)."""
_LAST_CHUNK = b"0\r\n\r\n"


def content_length(head: bytes) -> int:
    """The Content-Length of a head (0 if absent)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the mock; relays one answer at a time to ``client``."""

    def __init__(self, pool: list[Upstream]):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self._head = b""  # the answer's head while it is still arriving
        self._left = -1  # Content-Length bytes still due; -1: chunked (ends with the last chunk)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:
            self.client.transport.close()

    def send(self, client: Client, request: bytes) -> None:
        self.client, self._head, self._left = client, b"", -1
        client.upstream = self
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            return
        client.transport.write(data)
        if self._head is not None:  # the head: find how the body ends
            head = self._head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self._head = head
                return
            self._head = None
            if b"chunked" not in head[:end].lower():
                self._left = content_length(head[:end]) - (len(head) - end - 4)
        elif self._left > 0:
            self._left -= len(data)
        if self._left == 0 or (self._left < 0 and data.endswith(_LAST_CHUNK)):
            self.client = None
            self.pool.append(self)
            client.answered()


class Client(asyncio.Protocol):
    """One client connection: requests in, each forwarded once its body is whole."""

    def __init__(self, upstream_port: int, pool: list[Upstream]):
        self.upstream_port = upstream_port
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._busy = False
        self.upstream: Upstream | None = None  # the one relaying this client's answer

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.client is self:
            upstream.client = None
            upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._next()

    def answered(self) -> None:
        self._busy, self.upstream = False, None
        if self._buf:
            self._next()

    def _next(self) -> None:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                self.transport.close()
            return
        whole = end + 4 + content_length(self._buf[:end])
        if len(self._buf) < whole:
            return
        head, body, self._buf = self._buf[:end], self._buf[end + 4:whole], self._buf[whole:]
        method, target, _ = head.split(b" ", 2)
        if WORK_S:
            _spin(WORK_S)
        self._busy = True
        request = b"%s %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n" \
                  b"content-length: %d\r\n\r\n%s" % (method, target, len(body), body)
        if self.pool:
            self.pool.pop().send(self, request)
        else:
            asyncio.ensure_future(self._dial(request))

    async def _dial(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: Upstream(self.pool), "127.0.0.1",
                                                   self.upstream_port)
        upstream.send(self, request)


def _spin(seconds: float) -> None:
    """Busy for ``seconds`` of this thread's CPU time (not wall time: a preempted spin still
    costs what it says)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def serve(port: int, upstream_port: int) -> None:
    pool: list[Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port, pool), "127.0.0.1", port,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--work-us", type=float, default=0.0,
                    help="CPU µs spent on each request before forwarding it (default 0)")
    args = ap.parse_args()
    global WORK_S
    WORK_S = args.work_us / 1e6
    uvloop.run(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
