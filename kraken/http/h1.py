"""Inbound HTTP/1.1: one ``asyncio.Protocol`` per connection, parsing heads with h11.

h11 parses request heads; a fresh ``h11.Connection`` is given each head alone, so its
send-side state machine is never driven. Request bodies are framed here (``FixedBody``,
``ChunkedBody``): h11's chunked reader accepts any byte but LF in a chunk extension, bare
LF and obs-fold in trailers, and unbounded extensions and trailers, each a way for a
proxy in front of Kraken and Kraken to disagree on where a request ends (smuggling).
Responses are framed here too: sending a body chunk through ``h11.Connection.send`` costs
~7 µs against ~0.6 µs for formatting the chunk (DECISIONS.md), and a stream has hundreds.

Connection states (one table, like h11's ``_state.py``):
    HEAD ──request head──▶ BODY ──end of body──▶ BUSY ──response end, keep-alive──▶ HEAD
    HEAD | BODY ──malformed / over limit / timeout──▶ BUSY (error response) ──▶ CLOSED
    any ──close / abort / client gone──▶ CLOSED

Closing is "lingering": after the last response the write side is shut (FIN) and whatever
the client still sends is read and dropped until it closes too, or ``_LINGER_S`` passes.
Closing a socket with unread request bytes makes the kernel send RST, and the client then
often loses the response it was about to read (e.g. a 413 sent before the body).

Slow clients: the head must be complete ``head_timeout_s`` after the connection (or its
idle keep-alive wait) began, however it trickles in (slowloris); a body may pause at most
``body_idle_timeout_s`` and must be complete ``body_timeout_s`` after the head plus one
second per ``body_min_rate_bytes_s`` bytes received (``BodyPace``; slow POST). A client
that stops reading a response pauses the producer (``write_buffer_high``); if writing stays
paused for ``send_stall_timeout_s`` the connection is aborted, which cancels the handler and
with it the provider call. Writing resumes once the client drained the transport buffer to
a quarter of ``write_buffer_high``, so a client must read about 3/4 of it (192 KiB by
default) per ``send_stall_timeout_s`` while it is behind, after the kernel buffers (MBs).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from http import HTTPStatus
from typing import Awaitable, Callable

import h11

from kraken import metrics
from kraken.config import ServerConfig
from kraken.errors import KrakenError, error_body
from kraken.http.exchange import FlowControl, Request
from kraken.http.h1body import BodyPace, BodyRejected, ChunkedBody, FixedBody
from kraken.http.h1head import HeadRejected, check_head, find_head_end
from kraken.timers import Deadline

log = logging.getLogger("kraken.http")

Handler = Callable[[Request, "H1Connection"], Awaitable[None]]

HEAD, BODY, BUSY, CLOSED = "HEAD", "BODY", "BUSY", "CLOSED"

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_LINGER_S = 2.0
"""How long a closing connection keeps draining client bytes before it is closed."""
_REJECT_CODES = {400: "invalid_request", 408: "request_timeout", 413: "request_too_large",
                 414: "uri_too_long", 431: "request_header_fields_too_large",
                 505: "http_version_not_supported"}
_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control bytes h11 lets through in field values (it refuses only NUL and whitespace)."""
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
"""RFC 9112 §3.2: uri-host [":" port]; no spaces, no userinfo, no second host."""


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

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set | None = None,
                 *, always_headers: list[tuple[bytes, bytes]] | None = None,
                 on_lost: Callable[[], None] | None = None):
        self._handler = handler
        self._on_lost = on_lost
        """Called once when the connection is gone (the listener's per-address count)."""
        self._always = b"".join(b"%s: %s\r\n" % h for h in always_headers or ())
        """Header lines on every response of this connection (e.g. HSTS over TLS)."""
        self._cfg = cfg
        self._tracker = tracker
        self._loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.state = HEAD
        self._buf = bytearray()
        self._request_head: h11.Request | None = None
        self._reader: FixedBody | ChunkedBody | None = None
        self._pace: BodyPace | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_ns = 0
        self._expect_continue = False
        self._task: asyncio.Task | None = None
        self._seq = 0
        """Counts requests handed to the handler, so a task knows if it still owns the sink."""
        self._deadline = Deadline(self._loop, self._on_timeout)
        self._stall = Deadline(self._loop, self._on_stall)
        """Runs while writing is paused: a client that reads nothing for this long is cut."""
        self._stall_timeout: float = cfg.send_stall_timeout_s
        self._keep_alive = True
        self._http11 = True
        self._idle = False
        """Waiting for a next request under the keep-alive timeout (not the head timeout)."""
        self._reading_paused = False
        self._writing_paused = False
        self._producer: FlowControl | None = None
        # per-response state
        self._started = False
        self._chunked = False
        self._head_only = False
        self._mute = False
        """Nothing more may be written: a HEAD response's body, or the connection is closing."""
        self._corked = False
        self._pending: list[bytes] = []
        """Writes held while corked: at most what one provider read delivered."""
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
        self._mute = True
        self.state = CLOSED
        self._buf = bytearray()
        self._deadline.stop()
        self._stall.stop()
        self._stop_body()
        metrics.ACTIVE_CONNECTIONS.dec()
        if self._tracker is not None:
            self._tracker.discard(self)
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._producer is not None and self._writing_paused:
            self._producer.resume_reading()

    def eof_received(self) -> bool | None:
        # A client that half-closes has given up on this connection; treat as gone.
        # While lingering, this is the client's close we were waiting for.
        return None

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is BODY:
            self._deadline.touch()
            self._feed_body(data)
        elif state is HEAD:
            if self._idle:  # keep-alive idle ends here; the head must now be sent in time
                self._idle = False
                self._deadline.arm(self._cfg.head_timeout_s)
            seen = len(self._buf)
            self._buf += data
            self._parse_head(seen - 3 if seen > 3 else 0)
        elif state is BUSY:
            self._buf += data
            if len(self._buf) > self._cfg.pipeline_buffer_bytes:
                self._pause_reading()
        # CLOSED (lingering): the client's remaining bytes are dropped

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._stall_timeout > 0:
            self._stall.arm(self._stall_timeout)
        if self._producer is not None:
            self._producer.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._stall.cancel()
        if self._producer is not None:
            self._producer.resume_reading()

    # ---- request parsing -----------------------------------------------------------
    def _parse_head(self, scanned: int = 0) -> None:
        """Parse the head in ``_buf`` if complete; ``scanned`` bytes are known not to hold
        its end."""
        # Also scheduled with call_soon after a response when pipelined bytes wait: by
        # then data_received may already have started the next request.
        if self.state is not HEAD:
            return
        buf = self._buf
        if buf[:2] == b"\r\n":
            scanned = 0
            _skip_empty_lines(buf)
        if not buf:
            return
        try:
            end = find_head_end(buf, self._cfg.max_head_bytes, scanned)
            if end < 0:
                return
            length = check_head(bytes(buf[:end]))
        except HeadRejected as exc:
            self._reject(exc.status, str(exc))
            return
        if length is not None and length > self._cfg.max_body_bytes:
            self._reject(413, "request body too large")  # before the body is sent
            return
        self._head_ns = time.perf_counter_ns()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._cfg.max_head_bytes)
        conn.receive_data(bytes(buf[:end]))
        rest = bytes(buf[end:])
        self._buf = bytearray()
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            # h11's text quotes the offending line, which may be an Authorization header:
            # never echoed (errors.py: messages carry no keys).
            status = exc.error_status_hint if exc.error_status_hint in (414, 431) else 400
            self._reject(status, "malformed request")
            return
        if not isinstance(event, h11.Request):  # cannot happen with a complete head
            self._reject(400, "malformed request")
            return
        if len(event.target) > self._cfg.max_uri_bytes:
            self._reject(414, "request URI too long")
            return
        refused = _refuse_head(event, buf, end)
        if refused is not None:
            self._reject(*refused)
            return
        self._http11 = event.http_version == b"1.1"
        # h11 has refused every Transfer-Encoding but "chunked", and check_head one next to
        # a Content-Length.
        chunked = any(name == b"transfer-encoding" for name, _ in event.headers)
        if chunked and not self._http11:
            # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
            self._reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            return
        self._request_head = event
        self._body = []
        self._body_size = 0
        self._expect_continue = conn.they_are_waiting_for_100_continue
        self._keep_alive = self._http11 and not _has_token(
            event.headers, b"connection", b"close"
        )
        self._head_only = event.method == b"HEAD"
        self._reader = (ChunkedBody(self._cfg.max_body_bytes, self._cfg.max_head_bytes)
                        if chunked else FixedBody(length or 0))
        self.state = BODY
        self._feed_body(rest)
        if self.state is BODY:  # the body is still to come
            self._deadline.arm(self._cfg.body_idle_timeout_s)
            self._pace = BodyPace.start(self._loop, self._cfg, self._body_too_slow)
            if self._pace is not None:
                self._pace.add(self._body_size)

    def _feed_body(self, data: bytes) -> None:
        reader = self._reader
        assert reader is not None
        body = self._body
        before = len(body)
        try:
            rest = reader.feed(data, body)
        except BodyRejected as exc:
            self._reject(exc.status, str(exc))
            return
        if len(body) > before:
            self._expect_continue = False
            size = sum(len(piece) for piece in body[before:])
            self._body_size += size
            if self._pace is not None:
                self._pace.add(size)
        if rest is not None:
            self._dispatch(rest)
        elif self._expect_continue and self.transport is not None:
            self._expect_continue = False
            self.transport.write(_CONTINUE)

    def _body_too_slow(self) -> None:
        self._pace = None
        if self.state is BODY:
            self._reject(408, "request body too slow")

    def _stop_body(self) -> None:
        """Forget the request body being received (dispatched, refused or abandoned)."""
        self._reader = None
        if self._pace is not None:
            self._pace.stop()
            self._pace = None

    def _dispatch(self, leftover: bytes) -> None:
        head = self._request_head
        assert head is not None
        self._buf = bytearray(leftover)
        self._deadline.cancel()
        self._stop_body()
        self.state = BUSY
        self._started = False
        self._seq += 1
        request = Request(
            method=head.method.decode("ascii", "replace"),
            target=head.target.decode("ascii", "replace"),
            headers=tuple((k, v) for k, v in head.headers),
            body=b"".join(self._body),
            peer=self.peer,
            received_ns=self._head_ns,
            http_version=head.http_version.decode(),
        )
        self._body = []
        self._task = self._loop.create_task(self._run(request, self._seq))

    def _owns(self, seq: int) -> bool:
        """Whether request ``seq`` still has an unfinished response on this connection."""
        return seq == self._seq and self.state is BUSY

    async def _run(self, request: Request, seq: int) -> None:
        task = asyncio.current_task()
        try:
            await self._handler(request, self)
            if self._owns(seq) and not self.disconnected:
                # Returned without ending its response: don't leave the client waiting.
                log.error("request handler returned without ending its response")
                self._fail(KrakenError("internal error"))
        except asyncio.CancelledError:
            if self._owns(seq) and not self.disconnected:
                self.abort()
            raise
        except KrakenError as exc:  # handler let a mapped error escape
            if self._owns(seq):
                self._fail(exc)
        except Exception:
            log.exception("unhandled error in request handler")
            if self._owns(seq):
                self._fail(KrakenError("internal error"))
        finally:
            # A handler may still run after end(); the next request's task is not ours.
            if self._task is task:
                self._task = None

    def _fail(self, exc: KrakenError) -> None:
        if self.disconnected:
            return
        if self._started:
            self.abort()
        else:
            send_error(self, exc)

    @property
    def tasks(self) -> list[asyncio.Task]:
        """Running handler tasks (zero or one here; HTTP/2 may have many)."""
        task = self._task
        return [task] if task is not None and not task.done() else []

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
        if self._started or self.state is not BUSY:
            return  # a second start, or the connection is closing: nothing may be sent
        head = self._head(status, headers, length)
        if self._corked:
            self._pending.append(head)
        else:
            self.transport.write(head)  # type: ignore[union-attr]

    def _head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
        """The status line and header section; decides the body's framing."""
        self._started = True
        self._mute = self._head_only
        if self.draining:
            self._keep_alive = False
        parts = [b"HTTP/1.1 %d %s\r\ndate: %s\r\nserver: kraken\r\n%s" % (
            status, _REASONS.get(status, b"Unknown"), DATE.get(), self._always)]
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
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        if self._mute or not data:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._corked:
            self._pending.append(data)
        else:
            self.transport.write(data)  # type: ignore[union-attr]

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """``start`` + ``write`` + ``end`` with the head and body in one transport write."""
        if self.state is not BUSY:
            return
        if self._started:
            self.write(body)
        else:
            data = self._head(status, headers, len(body))
            if body and not self._mute:
                data += body
            if self._corked:
                self._pending.append(data)
            else:
                self.transport.write(data)  # type: ignore[union-attr]
        self.end()

    def cork(self) -> None:
        """Hold writes until ``flush``/``end``: bytes that arrived together leave in one
        syscall (a relay corks per provider read, so nothing waits longer than that read)."""
        self._corked = True

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            if not self._mute:
                self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))  # type: ignore[union-attr]

    def end(self) -> None:
        if self.state is not BUSY or not self._started:
            return
        if self._chunked and not self._mute:
            self._pending.append(_LAST_CHUNK)
        self._corked = False
        self.flush()
        self._producer = None
        if not self._keep_alive or self.draining:
            self._close()
            return
        self.state = HEAD
        self._started = False
        self._mute = False
        self._head_only = False
        self._request_head = None
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        _skip_empty_lines(self._buf)
        if self._buf:
            self._deadline.arm(self._cfg.head_timeout_s)
            self._loop.call_soon(self._parse_head)  # next pipelined request, after this task
        else:
            self._idle = True
            self._deadline.arm(self._cfg.keepalive_timeout_s)

    def abort(self) -> None:
        self._producer = None
        self._mute = True
        self._corked = False
        self._pending = []
        self.state = CLOSED
        self._deadline.cancel()
        self._stop_body()
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
        log.debug("rejected request from %s: %d %s", self.peer, status, reason)
        self._keep_alive = False
        self._body = []
        self._stop_body()
        self._request_head = None
        if self.transport is None or self.disconnected or self.state is CLOSED:
            self.state = CLOSED
            return
        # A fresh response of this connection, whatever the previous request was.
        self.state = BUSY
        self._started = False
        self._head_only = False
        self._mute = False
        err = KrakenError(reason, status=status, code=_REJECT_CODES.get(status))
        err.error_type = "invalid_request_error"
        send_error(self, err)  # its end() closes: keep-alive is off

    def _close(self) -> None:
        """Finish the connection after the last response: FIN, then linger (module doc)."""
        self.state = CLOSED
        self._mute = True
        self._producer = None
        self._buf = bytearray()
        self._deadline.cancel()
        self._stop_body()
        transport = self.transport
        if transport is None or self.disconnected or transport.is_closing():
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        try:
            transport.write_eof()
        except (RuntimeError, OSError, NotImplementedError):  # e.g. a TLS transport
            transport.close()
            return
        self._deadline.arm(_LINGER_S)

    def _on_timeout(self) -> None:
        state = self.state
        if state is BODY or (state is HEAD and self._buf):
            self._reject(408, "request timeout")
        elif state is HEAD:
            self._close()  # idle keep-alive, or a connection that never sent a byte
        elif state is CLOSED and self.transport is not None:
            self.transport.close()  # lingered long enough
            # close() still waits for the client to read what is buffered: not forever.
            if (self._stall_timeout > 0 and self._stall.timeout <= 0
                    and self.transport.get_write_buffer_size()):
                self._stall.arm(self._stall_timeout)

    def _on_stall(self) -> None:
        """Writing stayed paused for ``send_stall_timeout_s``: the client reads nothing."""
        if self.disconnected:
            return
        log.info("client %s read nothing for %.0f s: connection aborted",
                 self.peer, self._stall_timeout)
        self.abort()  # connection_lost cancels the handler, and with it the provider call


def send_error(sink, exc: KrakenError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer ``exc`` as an OpenAI-style JSON error (the one place errors are rendered).

    Every answer carries ``x-request-id``: ``extra`` has the call's; an answer the transport
    gives on its own (a malformed request, an error no handler caught) gets a fresh one,
    shaped like the gateway's (``req_`` + 24 hex digits)."""
    body = error_body(exc)
    extra = extra or []
    if not any(name == b"x-request-id" for name, _ in extra):
        extra = [*extra, (b"x-request-id", b"req_" + os.urandom(12).hex().encode())]
    headers = [(b"content-type", b"application/json")] + exc.headers + extra
    sink.start(exc.status, headers, len(body))
    sink.write(body)
    sink.end()


def _refuse_head(event: h11.Request, buf: bytearray, end: int) -> tuple[int, str] | None:
    """What h11 accepts but a front server may read differently: (status, reason) or None."""
    if event.http_version[:2] != b"1.":
        return 505, "HTTP version not supported"
    if _CTL.search(buf, 0, end) is not None:
        return 400, "control character in request head"
    hosts = [value for name, value in event.headers if name == b"host"]
    if len(hosts) > 1:
        return 400, "duplicate Host"
    if hosts and _HOST.fullmatch(hosts[0]) is None:
        return 400, "invalid Host"
    return None


def _skip_empty_lines(buf: bytearray) -> None:
    """RFC 9112 §2.2: ignore empty lines before a request-line (some clients send a CRLF
    after a POST body); h11 would answer "no request line received"."""
    while buf[:2] == b"\r\n":
        del buf[:2]


def _has_token(headers: list[tuple[bytes, bytes]], name: bytes, token: bytes) -> bool:
    """Whether comma-separated header ``name`` lists ``token`` (case-insensitive)."""
    for key, value in headers:
        if key == name:
            value = value.lower()
            if token in value and any(p.strip() == token for p in value.split(b",")):
                return True
    return False
