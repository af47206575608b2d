"""The server half every mock provider shares: connections, replies, recording and failure knobs.

A provider (``MockOpenAI``, ``MockAnthropic``, ``MockGemini``) subclasses ``MockServer`` and
only turns a parsed request into a ``Reply``; everything on the wire is done here, by ``_Conn``,
the one object that touches a transport. An undelayed reply goes out in one ``write``; a delayed,
dropped or hung one is sent event by event, honouring ``pause_writing``.

The per-request ``"mock"`` knobs handled here (``_with_mock``): ``first_byte_delay_ms``,
``chunk_delay_ms`` (before each event the provider marks as paced), ``drop_after_chunks`` /
``hang_after_chunks`` (after that many SSE events close with a bare FIN / stop sending but keep the
socket open; on a non-stream request close / hang before answering), ``close_before_response``,
``close_after_response`` (the whole answer, announced with ``connection: close``, then a FIN: a
provider that does not keep connections alive, so the next call dials anew).
"""
from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from kraken.mock.http1 import (
    JSON,
    MAX_BODY,
    MAX_HEAD,
    SSE,
    ParsedRequest,
    ParseError,
    RequestParser,
    frame,
    response_head,
)

__all__ = ["RECORD_MAX", "BadRequest", "MockRequest", "MockResponse", "MockServer", "Reply",
           "WireCache", "checked_int", "load_body", "mock_status", "stream_entry", "stream_reply"]

RECORD_MAX = 1000


# ----------------------------------------------------------------------------- records
# NamedTuples, not frozen dataclasses: immutable all the same, and ~4x cheaper to build per request.


class MockRequest(NamedTuple):
    """One received request as the mock saw it; header names are lower-case bytes."""

    index: int
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return orjson.loads(self.body)


class MockResponse(NamedTuple):
    """The exact body bytes sent for request ``index`` (a stream de-chunked, cut where it was cut)."""

    index: int
    status: int
    body: bytes


# ----------------------------------------------------------------------------- request helpers


class BadRequest(Exception):
    """A request the provider rejects with 400; ``param`` names the field where the API does."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


INT_MESSAGE = "{name}: expected an integer in [{low}, {high}]"


def checked_int(value: Any, name: str, low: int, high: int, message: str = INT_MESSAGE) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(message.format(name=name, low=low, high=high), name)
    return value


_NO_MOCK: dict = {}


def load_body(raw: bytes, invalid: str, not_object: str = "The request body must be a JSON object.",
              ) -> tuple[dict, dict]:
    """The JSON object body and its ``"mock"`` knobs (``{}`` when absent)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest(invalid) from None
    if not isinstance(body, dict):
        raise BadRequest(not_object)
    mock = body.get("mock")
    return body, mock if isinstance(mock, dict) else _NO_MOCK


def mock_status(mock: dict) -> int | None:
    """``mock.status`` when it asks for an error status."""
    status = mock.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return status
    return None


# ----------------------------------------------------------------------------- replies


@dataclass(slots=True)
class Reply:
    """What to send for one request: a whole body, or stream events, plus failure-mode knobs."""

    status: int
    body: bytes = b""
    events: list[bytes] | None = None  # unframed SSE events; None = Content-Length body
    framed: list[bytes] | None = None  # the same events chunk-framed (cached with them)
    whole: tuple[bytes, bytes] | None = None  # (de-chunked body, chunked body) of a whole stream
    ctype: bytes | None = None  # None: JSON for a body, SSE for events
    n: int = 1  # choices; an OpenAI stream starts with one role event per choice
    rounds: int = 0  # content rounds: a delayed whole body waits as long as its stream would
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    hang_after: int | None = None
    close_now: bool = False
    close_after: bool = False  # answer whole with "connection: close", then close

    @property
    def immediate(self) -> bool:
        return self.first_delay <= 0 and self.chunk_delay <= 0


def stream_entry(events: list[bytes]) -> tuple:
    """(events, framed events, de-chunked body, whole chunked body) of one stream."""
    framed = [frame(e) for e in events]
    return (events, framed, b"".join(events), b"".join(framed) + b"0\r\n\r\n")


def stream_reply(events: list[bytes], **fields: Any) -> Reply:
    entry = stream_entry(events)
    return Reply(200, events=entry[0], framed=entry[1], whole=entry[2:], **fields)


class WireCache:
    """Wire bytes per plan (a hashable NamedTuple), bounded because plans carry timestamps."""

    def __init__(self, build: Callable[[Any], tuple], size: int = 512):
        self.build = build
        self.size = size
        self.data: dict[Any, tuple] = {}

    def get(self, plan: Any) -> tuple:
        hit = self.data.get(plan)
        if hit is None:
            hit = self.build(plan)
            if len(self.data) >= self.size:
                self.data.clear()
            self.data[plan] = hit
        return hit


# ----------------------------------------------------------------------------- connection


class _Conn(asyncio.Protocol):
    """One client connection: the only object here that touches a transport."""

    __slots__ = ("_drain", "busy", "closed", "parser", "server", "task", "transport")

    def __init__(self, server: MockServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(MAX_HEAD, MAX_BODY)
        self.busy = False
        self.task: asyncio.Task | None = None
        self.closed: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.closed = asyncio.get_running_loop().create_future()
        self.server._conns.add(self)

    def connection_lost(self, exc):
        self.server._conns.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def pause_writing(self):
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data):
        self.server.bytes_received += len(data)
        self.parser.feed(data)
        if self.parser.buffered > MAX_HEAD + MAX_BODY:
            self.transport.pause_reading()
        if not self.busy:
            self._process()

    def _process(self):
        while self.transport is not None and not self.transport.is_closing():
            try:
                req = self.parser.next()
            except ParseError as e:
                body = self.server.error_body(e.status, e.message)
                self.transport.write(response_head(e.status, JSON, len(body), True, False) + body)
                self.transport.close()
                return
            if req is None:
                if self.parser.expect_continue:
                    self.parser.expect_continue = False
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            self.parser.expect_continue = False
            index, reply = self.server._handle(req)
            if reply.close_now:
                self.server._record(index, 0, b"")
                self.transport.abort()
                return
            if reply.immediate and reply.hang_after is None:
                self._send_now(index, req, reply)
            else:
                self.busy = True
                self.task = asyncio.ensure_future(self._send_later(index, req, reply))
                return

    def _stamp(self) -> Callable[[bytes], bytes]:
        """Puts a fresh response id where the cached bytes hold the provider's placeholder."""
        placeholder = self.server.id_placeholder
        if placeholder is None:
            return lambda data: data
        rid = self.server._next_id()
        return lambda data: data.replace(placeholder, rid)

    def _send_now(self, index: int, req: ParsedRequest, reply: Reply) -> None:
        close = not req.keep_alive or reply.close_after
        if reply.events is None:
            if reply.drop_after is not None:  # a non-stream body cut before it starts
                self.server._record(index, reply.status, b"")
                self.transport.close()
                return
            head = response_head(reply.status, reply.ctype or JSON, len(reply.body), close, req.http10)
            self.transport.write(head + reply.body)
            self.server._record(index, reply.status, reply.body)
        else:
            close = close or req.http10
            stamp = self._stamp()
            head = response_head(reply.status, reply.ctype or SSE, None, close, req.http10)
            cut = reply.drop_after
            if cut is not None and cut < len(reply.events):  # dropped: no last-chunk, just a FIN
                body = b"".join(reply.events[:cut])
                wire = body if req.http10 else b"".join(reply.framed[:cut])
                close = True
            else:
                body, wire = reply.whole
                if req.http10:
                    wire = body
            self.transport.write(head + stamp(wire))
            self.server._record(index, reply.status, stamp(body))
        if close:
            self.transport.close()

    async def _send_later(self, index: int, req: ParsedRequest, reply: Reply) -> None:
        """Delayed, dropped or hung responses: one event at a time, honouring pause_writing."""
        sent: list[bytes] = []
        record = reply.events is not None
        try:
            if reply.first_delay > 0:
                await asyncio.sleep(reply.first_delay)
            if reply.events is None:
                if reply.chunk_delay > 0:  # a whole body takes as long as its stream would
                    await asyncio.sleep(reply.chunk_delay * reply.rounds)
                if reply.hang_after is not None:
                    await self.closed
                elif self.transport is not None:
                    self._send_now(index, req, reply)
                return
            events = reply.events
            limits = [x for x in (reply.drop_after, reply.hang_after) if x is not None]
            stop = min([len(events), *limits])
            hang = reply.hang_after is not None and stop == reply.hang_after
            close = not req.keep_alive or req.http10 or reply.close_after
            stamp = self._stamp()
            pending = response_head(reply.status, reply.ctype or SSE, None, close, req.http10)
            close = close or stop < len(events)  # a drop is a bare FIN, not announced
            paced = self.server._paced
            for k in range(stop):
                if reply.chunk_delay > 0 and paced(reply, k, events[k]):
                    await asyncio.sleep(reply.chunk_delay)
                if self._drain is not None and not self._drain.done():
                    await self._drain
                if self.transport is None:
                    return
                ev = stamp(events[k])
                sent.append(ev)
                self.transport.write(pending + (ev if req.http10 else frame(ev)))
                pending = b""
            if pending:
                self.transport.write(pending)
            if hang:
                self.server._record(index, reply.status, b"".join(sent))
                record = False
                await self.closed
                return
            if stop == len(events) and not req.http10:
                self.transport.write(b"0\r\n\r\n")
            if close:
                self.transport.close()
        except asyncio.CancelledError:
            pass  # the connection or the server closed
        finally:
            if record:
                self.server._record(index, reply.status, b"".join(sent))
            self.task = None
            self.busy = False
            if self.transport is not None and not self.transport.is_closing():
                self._process()


# ----------------------------------------------------------------------------- server


class MockServer:
    """An HTTP/1.1 server on the running event loop; subclasses answer ``_route``.

    ``requests``/``responses`` keep the last ``RECORD_MAX`` exchanges for assertions.
    """

    id_placeholder: bytes | None = None
    """Marks the response id in cached bytes; ``_next_id()`` replaces it per response."""
    int_message = INT_MESSAGE
    """How the provider words an out-of-range integer (``checked_int``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunks: int = 20,
                 chunk_delay_ms: float = 0.0, first_byte_delay_ms: float = 0.0,
                 api_key: str | None = None):
        self.host = host
        self.port = port
        self.chunks = chunks
        self.chunk_delay_ms = chunk_delay_ms
        self.first_byte_delay_ms = first_byte_delay_ms
        self.api_key = api_key
        self.requests: collections.deque = collections.deque(maxlen=RECORD_MAX)
        self.responses: collections.deque = collections.deque(maxlen=RECORD_MAX)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._count = 0
        self.bytes_received = 0
        """Request bytes read from every connection (what reached the provider)."""
        self._ids = 0
        self._id_prefix = secrets.token_hex(4).encode()

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), self.host, self.port, backlog=2048, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the last connection_lost callbacks run

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- provider hooks

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        """The provider's error envelope (also used for malformed HTTP)."""
        raise NotImplementedError

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        raise NotImplementedError

    def _next_id(self) -> bytes:
        raise NotImplementedError

    def _paced(self, reply: Reply, k: int, event: bytes) -> bool:
        """Whether ``chunk_delay`` is waited before stream event ``k``; by default every event."""
        return True

    def _record_request(self, index: int, req: ParsedRequest, path: str) -> None:
        self.requests.append(MockRequest(index, req.method, path, req.headers, req.body))

    def _record(self, index: int, status: int, body: bytes) -> None:
        self.responses.append(MockResponse(index, status, body))

    # -- internals used by _Conn

    def _handle(self, req: ParsedRequest) -> tuple[int, Reply]:
        index = self._count
        self._count += 1
        path = req.target.split("?", 1)[0]
        self._record_request(index, req, path)
        try:
            return index, self._route(req, path)
        except BadRequest as e:
            return index, Reply(400, self.error_body(400, e.message, e.param))

    def _opt_int(self, mock: dict, key: str) -> int | None:
        value = mock.get(key)
        if value is None:
            return None
        return checked_int(value, f"mock.{key}", 0, 10_000_000, self.int_message)

    def _with_mock(self, mock: dict, reply: Reply) -> Reply:
        """Applies the server's delays, overridden by the request's failure knobs."""
        if not mock:
            reply.first_delay = self.first_byte_delay_ms / 1000
            reply.chunk_delay = self.chunk_delay_ms / 1000
            return reply
        reply.first_delay = float(mock.get("first_byte_delay_ms", self.first_byte_delay_ms)) / 1000
        reply.chunk_delay = float(mock.get("chunk_delay_ms", self.chunk_delay_ms)) / 1000
        reply.drop_after = self._opt_int(mock, "drop_after_chunks")
        reply.hang_after = self._opt_int(mock, "hang_after_chunks")
        reply.close_now = mock.get("close_before_response") is True
        reply.close_after = mock.get("close_after_response") is True
        return reply
