"""Inbound HTTP/1.1: one ``asyncio.Protocol`` per connection, parsing with h11.

h11 parses request heads and bodies. Responses are framed here directly: sending a body
chunk through ``h11.Connection.send`` costs ~7 µs against ~0.6 µs for formatting the chunk
(DECISIONS.md), and a stream has hundreds of chunks. A fresh ``h11.Connection`` is made per
request and handed the unparsed bytes of the previous one, which keeps pipelining correct
without driving h11's send-side state machine.

Connection states (one table, like h11's ``_state.py``):
    HEAD ──request head──▶ BODY ──end of body──▶ BUSY ──response end, keep-alive──▶ HEAD
    any ──error / close──▶ CLOSED
"""
from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import Awaitable, Callable

import h11

from kraken import metrics
from kraken.config import ServerConfig
from kraken.errors import KrakenError, error_body
from kraken.http.exchange import FlowControl, Request
from kraken.http.h1head import HeadRejected, check_head, find_head_end
from kraken.http.timers import Deadline

log = logging.getLogger("kraken.http")

Handler = Callable[[Request, "H1Connection"], Awaitable[None]]

HEAD, BODY, BUSY, CLOSED = "HEAD", "BODY", "BUSY", "CLOSED"

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class _DateHeader:
    """The Date header, formatted once per second rather than per response."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        return self._value


DATE = _DateHeader()


class H1Connection(asyncio.Protocol):
    """One client connection; also the ``ResponseSink`` of its current request."""

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set | None = None):
        self._handler = handler
        self._cfg = cfg
        self._tracker = tracker
        self._loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.state = HEAD
        self._buf = bytearray()
        self._h11: h11.Connection | None = None
        self._request_head: h11.Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect_continue = False
        self._task: asyncio.Task | None = None
        self._deadline = Deadline(self._loop, self._on_timeout)
        self._keep_alive = True
        self._http11 = True
        self._reading_paused = False
        self._writing_paused = False
        self._producer: FlowControl | None = None
        # per-response state
        self._started = False
        self._chunked = False
        self._head_only = False
        self.disconnected = False
        self.draining = False

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "")
        transport.set_write_buffer_limits(high=self._cfg.write_buffer_high)  # type: ignore[attr-defined]
        self._deadline.arm(self._cfg.head_timeout_s)
        metrics.ACTIVE_CONNECTIONS.inc()
        if self._tracker is not None:
            self._tracker.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.state = CLOSED
        self._deadline.cancel()
        metrics.ACTIVE_CONNECTIONS.dec()
        if self._tracker is not None:
            self._tracker.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._producer is not None and self._writing_paused:
            self._producer.resume_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes has given up on this connection; treat as gone.
        return None

    def data_received(self, data: bytes) -> None:
        if self.state is BODY:
            self._deadline.touch()
            self._feed_body(data)
            return
        if self.state is HEAD:
            if not self._buf:
                self._deadline.arm(self._cfg.head_timeout_s)  # keep-alive idle ends here
            self._buf += data
            self._parse_head()
            return
        self._buf += data
        if self.state is BUSY and len(self._buf) > self._cfg.pipeline_buffer_bytes:
            self._pause_reading()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._producer is not None:
            self._producer.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._producer is not None:
            self._producer.resume_reading()

    # ---- request parsing -----------------------------------------------------------
    def _parse_head(self) -> None:
        buf = self._buf
        if not buf:
            return
        try:
            end = find_head_end(buf, self._cfg.max_head_bytes)
            if end < 0:
                return
            check_head(bytes(buf[:end]))
        except HeadRejected as exc:
            self._reject(exc.status, str(exc))
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._cfg.max_head_bytes)
        conn.receive_data(bytes(buf))
        self._buf = bytearray()
        self._h11 = conn
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint in (414, 431) else 400
            self._reject(status, "malformed request")
            return
        assert isinstance(event, h11.Request), event
        if len(event.target) > self._cfg.max_uri_bytes:
            self._reject(414, "request URI too long")
            return
        length = _content_length(event.headers)
        if length is not None and length > self._cfg.max_body_bytes:
            self._reject(413, "request body too large")
            return
        self._request_head = event
        self._body = []
        self._body_size = 0
        self._expect_continue = conn.they_are_waiting_for_100_continue
        self._http11 = event.http_version == b"1.1"
        self._keep_alive = self._http11 and not _has_token(
            event.headers, b"connection", b"close"
        )
        self.state = BODY
        self._deadline.arm(self._cfg.body_idle_timeout_s)
        self._pump_body()

    def _feed_body(self, data: bytes) -> None:
        assert self._h11 is not None
        self._h11.receive_data(data)
        self._pump_body()

    def _pump_body(self) -> None:
        conn = self._h11
        assert conn is not None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                self._reject(400, "malformed request body")
                return
            if event is h11.NEED_DATA:
                if self._expect_continue and self.transport is not None:
                    self._expect_continue = False
                    self.transport.write(_CONTINUE)
                return
            if type(event) is h11.Data:
                self._expect_continue = False
                self._body_size += len(event.data)
                if self._body_size > self._cfg.max_body_bytes:
                    self._reject(413, "request body too large")
                    return
                self._body.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                self._dispatch(conn.trailing_data[0])
                return
            else:  # ConnectionClosed mid-body or PAUSED: the client gave up
                self._close()
                return

    def _dispatch(self, leftover: bytes) -> None:
        head = self._request_head
        assert head is not None
        self._buf = bytearray(leftover)
        self._deadline.cancel()
        self.state = BUSY
        self._started = False
        self._head_only = head.method == b"HEAD"
        request = Request(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("ascii", "replace"),
            headers=tuple((k, v) for k, v in head.headers),
            body=b"".join(self._body),
            peer=self.peer,
            received_ns=time.perf_counter_ns(),
            http_version=head.http_version.decode(),
        )
        self._body = []
        self._task = self._loop.create_task(self._run(request))

    async def _run(self, request: Request) -> None:
        try:
            await self._handler(request, self)
        except asyncio.CancelledError:
            if not self.disconnected:
                self.abort()
            raise
        except KrakenError as exc:  # handler let a mapped error escape
            self._fail(exc)
        except Exception:
            log.exception("unhandled error in request handler")
            self._fail(KrakenError("internal error"))
        finally:
            self._task = None

    def _fail(self, exc: KrakenError) -> None:
        if self.disconnected:
            return
        if self._started:
            self.abort()
        else:
            send_error(self, exc)

    @property
    def task(self) -> asyncio.Task | None:
        """The handler task of the request in flight, if any."""
        return self._task

    # ---- ResponseSink --------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def set_producer(self, producer: FlowControl | None) -> None:
        self._producer = producer
        if producer is not None and self._writing_paused:
            producer.pause_reading()

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        if self.disconnected:
            return
        self._started = True
        if self.draining:
            self._keep_alive = False
        parts = [b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: kraken\r\n" % (
            status, _REASONS.get(status, b"Unknown"), DATE.get())]
        for name, value in headers:
            parts.append(b"%s: %s\r\n" % (name, value))
        if length is not None:
            self._chunked = False
            parts.append(b"content-length: %d\r\n" % length)
        elif self._http11:
            # chunked even when closing: a cut stream must look cut, not complete
            self._chunked = not self._head_only
            if self._chunked:
                parts.append(b"transfer-encoding: chunked\r\n")
        else:
            self._chunked = False  # HTTP/1.0: the body ends with the connection
        if not self._keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self.transport.write(b"".join(parts))  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if self.disconnected or self._head_only or not data:
            return
        if self._chunked:
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))  # type: ignore[union-attr]
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def end(self) -> None:
        if self.disconnected:
            return
        if self._chunked:
            self.transport.write(_LAST_CHUNK)  # type: ignore[union-attr]
        self._producer = None
        if not self._keep_alive or self.draining:
            self._close()
            return
        self.state = HEAD
        self._h11 = None
        self._request_head = None
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self._buf:
            self._deadline.arm(self._cfg.head_timeout_s)
            self._loop.call_soon(self._parse_head)  # next pipelined request, after this task
        else:
            self._deadline.arm(self._cfg.keepalive_timeout_s)

    def abort(self) -> None:
        self._producer = None
        if self.transport is not None and not self.disconnected:
            self.transport.abort()

    def close_when_idle(self) -> None:
        """Draining: close now if no request is in flight, else after its response."""
        self.draining = True
        if self.state is HEAD and not self._buf:
            self._close()

    # ---- helpers -------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _reject(self, status: int, reason: str) -> None:
        """A protocol error: answer ``status`` and close; nothing reaches the gateway."""
        metrics.PROTOCOL_ERRORS.labels(str(status)).inc()
        self.state = CLOSED
        self._keep_alive = False
        if self.transport is not None and not self.disconnected:
            err = KrakenError(reason, status=status)
            err.error_type = "invalid_request_error"
            send_error(self, err)

    def _close(self) -> None:
        self.state = CLOSED
        self._deadline.cancel()
        if self.transport is not None and not self.disconnected:
            self.transport.close()

    def _on_timeout(self) -> None:
        if self.state is BODY or (self.state is HEAD and self._buf):
            self._reject(408, "request timeout")
        elif self.state is HEAD:
            self._close()


def send_error(sink, exc: KrakenError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer ``exc`` as an OpenAI-style JSON error (the one place errors are rendered)."""
    body = error_body(exc)
    headers = [(b"content-type", b"application/json")] + exc.headers + (extra or [])
    sink.start(exc.status, headers, len(body))
    sink.write(body)
    sink.end()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def _has_token(headers: list[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    for key, value in headers:
        if key == name and token in value.lower():
            return True
    return False
