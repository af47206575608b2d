"""One HTTP/2 stream as the handler sees it: the ``ResponseSink`` of one exchange.

It turns sink calls into frames through its ``H2Connection`` (which owns the h2 state
machine, flow control and the socket) and carries the stream's phase and timers.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from kraken.h2common import CONNECTION_SPECIFIC
from kraken.http.bodystream import BodyStream
from kraken.http.exchange import FlowControl, Request
from kraken.http.date import DATE
from kraken.http.h1body import BodyPace
from kraken.timers import Deadline

if TYPE_CHECKING:
    from kraken.http.h2 import H2Connection

RECV, RUN, REJECTED = "RECV", "RUN", "REJECTED"
_DROP_RESPONSE_HEADERS = CONNECTION_SPECIFIC | {b"te", b"content-length"}


class H2Stream:
    """One request/response exchange; the ``ResponseSink`` given to the handler."""

    __slots__ = (
        "_conn", "stream_id", "phase", "method", "target", "scheme", "headers", "head_ns",
        "_body", "body_size", "deadline", "task", "_started", "_ending", "closed", "reset",
        "_head_only", "_pending", "_producer", "_producer_paused", "_buffer_full", "_left",
        "corked", "pace", "stall", "upload",
    )

    def __init__(self, conn: H2Connection, stream_id: int):
        self._conn = conn
        self.stream_id = stream_id
        self.phase = RECV
        self.method = ""
        self.target = ""
        self.scheme = "https"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_ns = 0
        self._body: list[bytes] = []
        self.body_size = 0
        self.deadline: Deadline | None = None
        self.task: asyncio.Task | None = None
        self._started = False
        self._ending = False
        """The body is complete (``end()``, or all of a Content-Length written); END_STREAM
        goes with the last queued byte."""
        self.closed = False
        """END_STREAM sent or the stream reset: nothing more may be sent."""
        self.reset = False
        """The client reset the stream (or broke it): it will never read the response."""
        self._head_only = False
        self._pending = bytearray()
        self._producer: FlowControl | None = None
        self._producer_paused = False
        self._buffer_full = False
        self._left: int | None = None
        """Body bytes still due under a Content-Length: the last ones carry END_STREAM."""
        self.corked = False
        """Frames are queued but not written until ``flush``/``end`` (one syscall per
        provider read). Another stream's flush may take them along: that only batches more."""
        self.pace: BodyPace | None = None
        self.stall: Deadline | None = None
        self.upload: BodyStream | None = None
        """An upload's body, fed to the running handler as it arrives."""
        """Made on the first stall: runs while queued bytes wait and nothing may add to them."""

    # ---- ResponseSink --------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    @property
    def disconnected(self) -> bool:
        return self.reset or self._conn.disconnected

    @property
    def unfinished(self) -> bool:
        """The handler has not ended the response, and the stream can still carry it."""
        return not self.closed and not self._ending

    def set_producer(self, producer: FlowControl | None) -> None:
        self._producer = producer
        self._producer_paused = False
        self.update_producer()

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        if self._started or self.closed:
            return
        self._started = True
        self._head_only = self.method == "HEAD"
        out = [(b":status", b"%d" % status), (b"date", DATE.get()), (b"server", b"kraken"),
               *self._conn.always_headers]
        for name, value in headers:
            name = name.lower()
            if name not in _DROP_RESPONSE_HEADERS:  # hop-by-hop fields are malformed in h2
                out.append((name, value))
        if length is not None:
            out.append((b"content-length", b"%d" % length))
            self._left = length
        self._conn.send_headers(self, out)

    def write(self, data: bytes) -> None:
        if self.closed or self._ending or not data or not self._started or self._head_only:
            return
        left = self._left
        if left is not None:
            self._left = left - len(data)
            if self._left <= 0:  # the whole body: END_STREAM goes with it, end() is a no-op
                self._ending = True
                self._producer = None
        self._conn.write_data(self, data)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """``start`` + ``write`` + ``end``, corked: HEADERS and DATA leave in one write."""
        self.corked = True
        self.start(status, headers, len(body))
        self.write(body)
        self.end()

    def cork(self) -> None:
        self.corked = True

    def flush(self) -> None:
        """Write the frames held since ``cork`` (DATA beyond the window waits for it)."""
        self._conn.flush()

    def end(self) -> None:
        self.corked = False
        if self.closed or self._ending or not self._started:
            self._conn.flush()
            return
        self._ending = True
        self._producer = None
        self._conn.pump(self)

    def abort(self) -> None:
        """RST_STREAM INTERNAL_ERROR: the client sees the response cut, not complete."""
        if not self.closed:
            self._conn.reset_stream(self, ErrorCodes.INTERNAL_ERROR)

    # ---- used by H2Connection ------------------------------------------------------
    @property
    def pending(self) -> bytearray:
        return self._pending

    @property
    def ending(self) -> bool:
        return self._ending

    def update_producer(self) -> None:
        """Pause or resume the producer: paused while the transport is full or this stream
        holds ``stream_buffer_bytes`` the client has no window for (resumed at half)."""
        conn = self._conn
        limit = conn.stream_buffer_bytes
        size = len(self._pending)
        if size >= limit:
            self._buffer_full = True
        elif size <= limit // 2:
            self._buffer_full = False
        stall = self.stall
        if self.stalled and not self.closed and conn.stall_timeout > 0:
            if stall is None:
                stall = self.stall = Deadline(conn.loop, lambda: conn.stream_stalled(self))
            if stall.timeout <= 0:  # a stall begins; one already running keeps its start
                stall.arm(conn.stall_timeout)
        elif stall is not None and stall.timeout > 0:
            stall.cancel()
        producer = self._producer
        if producer is None:
            return
        want = self._buffer_full or self._conn.writing_paused
        if want and not self._producer_paused:
            self._producer_paused = True
            producer.pause_reading()
        elif not want and self._producer_paused:
            self._producer_paused = False
            producer.resume_reading()

    def take_head(self, fields: list[tuple[bytes, bytes]]) -> int:
        """Keep the request head of HEADERS ``fields`` (validated by GuardedH2Connection):
        pseudo-headers apart, :authority as the Host an h1 handler would find. Returns the
        head's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it."""
        size = 0
        authority = None
        has_host = False
        headers = self.headers
        for name, value in fields:
            size += len(name) + len(value) + 32
            if name[:1] == b":":
                if name == b":method":
                    self.method = value.decode("ascii", "replace")
                elif name == b":path":
                    self.target = value.decode("ascii", "replace")
                elif name == b":scheme":
                    self.scheme = value.decode("ascii", "replace")
                else:
                    authority = value
            else:
                has_host = has_host or name == b"host"
                headers.append((name, value))
        if authority is not None and not has_host:
            headers.insert(0, (b"host", authority))
        return size

    def add_body(self, data: bytes) -> None:
        self._body.append(data)

    def take_body(self) -> bytes:
        body = b"".join(self._body)
        self._body = []
        return body

    @property
    def path(self) -> str:
        """The request's path (``Request.path``), known from its HEADERS on."""
        return self.target.split("?", 1)[0]

    def request(self, peer: str) -> Request:
        """The complete request, for the handler (as ``H1Exchange.request``); the body is let go."""
        return Request(self.method, self.target, tuple(self.headers), self.take_body(), peer,
                       self.head_ns, self.scheme, "2", self.upload)

    @property
    def stalled(self) -> bool:
        """Bytes wait for a window that the client does not open, and nothing more can be
        queued: the producer is paused on the full buffer, or there is none (it is done)."""
        return bool(self._pending) and (self._buffer_full or self._producer is None)

    def stop_receiving(self) -> None:
        """The request body is over: drop its timers (a timer merely disarmed would hold
        this stream and its connection until it fired)."""
        if self.deadline is not None:
            self.deadline.stop()
            self.deadline = None
        if self.pace is not None:
            self.pace.stop()
            self.pace = None

    def drop(self) -> None:
        """Forget everything queued: the stream is closed."""
        self.closed = True
        self._pending = bytearray()
        self._producer = None
        self._body = []
        self.stop_receiving()
        if self.upload is not None:
            self.upload.discard(ConnectionResetError("the stream closed"))
        if self.stall is not None:
            self.stall.stop()
            self.stall = None

    @property
    def producer(self) -> FlowControl | None:
        return self._producer

    @property
    def producer_paused(self) -> bool:
        return self._producer_paused
