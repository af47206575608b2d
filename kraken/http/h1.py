"""Inbound HTTP/1.1: one ``asyncio.Protocol`` per connection; one ``H1Exchange`` per request.

The connection owns the socket, the head parser (``h1head``: h11 plus the refusals it
lacks), keep-alive and pipelining. Each request head makes a fresh ``H1Exchange``, which
frames the request body (``h1body``: h11's chunked reader is too lenient, a smuggling risk)
and is then the handler's ``ResponseSink``, so a handler never writes into another request's
response.

Connection states (one table, like h11's ``_state.py``):
    HEAD ──request head──▶ BODY ──end of body──▶ BUSY ──response end, keep-alive──▶ HEAD
    HEAD | BODY ──malformed / over limit / timeout──▶ BUSY (error response) ──▶ CLOSED
    any ──close / abort / client gone──▶ CLOSED

Closing is lingering (``connection.py``): FIN, then the client's bytes are drained.

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
import time
from typing import Callable

from kraken.config import ServerConfig
from kraken.http.answers import ErrorAnswers, plain_answers, rejection
from kraken.http.bodystream import BodyStream, streams_body
from kraken.http.connection import Handler, InboundConnection, run_handler
from kraken.http.exchange import header_value
from kraken.h1framing import NO_LIMIT
from kraken.http.h1body import BodyPace, BodyRejected, ChunkedBody, FixedBody
from kraken.http.h1exchange import H1Exchange, header_lines
from kraken.http.h1fast import read_common_head
from kraken.http.h1head import (HeadRejected, check_head, find_head_end, is_chunked, keeps_alive,
                                may_stream, parse_head_h11, request_path, skip_empty_lines)
from kraken.logs import client_tag

log = logging.getLogger("kraken.http")

HEAD, BODY, BUSY, CLOSED, QUEUED = "HEAD", "BODY", "BUSY", "CLOSED", "QUEUED"
"""QUEUED: a whole head read while other requests wait their turn, kept unparsed until its
own (``_queue``)."""
_HEAD_END = b"\r\n\r\n"

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


_TASK_NAME = "kraken-h1-request"
"""Every HTTP/1.1 handler task's name (asyncio's own names are formatted per task)."""

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The HTTP/2 client preface: on cleartext, a client with prior knowledge starts with it."""

OnPreface = Callable[[asyncio.Transport, bytes, "Callable[[], None] | None"], None]
"""Takes over a connection whose first bytes were ``H2_PREFACE``: (transport, bytes read,
the ``on_lost`` that now passes to the new owner)."""

Admit = Callable[[asyncio.BaseTransport], "tuple[bool, Callable[[], None] | None]"]
"""Applies a cap when the connection is made: (admitted, what releases its count when it
ends); a refused connection has been answered and its transport handed to another protocol."""


class H1Connection(InboundConnection):
    """One client connection speaking HTTP/1.1; each request gets its own ``H1Exchange``."""

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set | None = None,
                 *, always_headers: list[tuple[bytes, bytes]] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 on_preface: OnPreface | None = None, admit: Admit | None = None,
                 answers: ErrorAnswers = plain_answers):
        super().__init__(handler, cfg, tracker, on_lost, loop, answers)
        self._admit = admit
        """A cleartext listener's per-address cap (``listener.admit``), applied first."""
        self._on_preface = on_preface
        """Set while the first bytes may still be the HTTP/2 preface (cleartext with prior
        knowledge allowed: ``listener``); the listener's HTTP/2 side takes over if they are."""
        self.always = header_lines(always_headers) if always_headers else b""
        """Header lines on every response of this connection (e.g. HSTS over TLS)."""
        self.state = HEAD
        self._buf = bytearray()
        """Bytes of the next request head (in BUSY: pipelined requests, up to a bound)."""
        self._unscanned = False
        """``_buf`` may hold a head end before its last 3 bytes: the pipelined bytes a response
        left, read before they were parsed (a read then scans ``_buf`` from its start)."""
        self._exchange: H1Exchange | None = None
        """The request being received or answered (BODY, BUSY); None otherwise."""
        self._task: asyncio.Task | None = None
        self._idle = False
        """Waiting for a next request under the keep-alive timeout (not the head timeout)."""
        self._kept_alive = False
        """A response has ended with the connection kept open: its deadline's timer is reused."""
        self.writing_paused = False
        self.draining = False
        self._queued_ns = 0
        """When a head kept unparsed in the pacer's line was read (``_queue``); 0 otherwise."""
        self._turn_taken = False
        """The request parsed at its turn in the line begins at once (``_start``)."""

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admit is not None:
            admitted, self._on_lost = self._admit(transport)
            if not admitted:  # answered, and the transport handed to another protocol
                self._deadline.close()
                return
        self._opened(transport)
        self._deadline.arm(self._cfg.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self._buf = bytearray()
        self._gone()
        exchange = self._exchange
        if exchange is not None:
            producer = exchange.producer
            self._detach()
            if producer is not None and self.writing_paused:
                producer.resume_reading()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is BODY:
            self._deadline.touch()
            self._feed_body(data)
        elif state is HEAD:
            if self._on_preface is not None and self._maybe_preface(data):
                return
            idle, self._idle = self._idle, False
            if self._starts.would_wait and not self._buf and _HEAD_END in data:
                self._queue(data)
                return
            seen = len(self._buf)
            if seen:
                self._buf += data
                start = seen - 3 if seen > 3 and not self._unscanned else 0
                self._unscanned = False
                self._parse_head(start)
            else:  # the usual read, a whole head (and body): parsed from it, not from a copy
                self._parse_head(0, data)
            if idle and self.state is HEAD:
                # Keep-alive idle ended with part of a head: it must now come in time. Armed
                # after the parse, so a whole head (the usual read) costs no timer of its own.
                self._deadline.arm(self._cfg.head_timeout_s)
        elif state is BUSY or state is QUEUED:
            self._hold(data)
        # CLOSED (lingering): the client's remaining bytes are dropped

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.stall_timeout > 0:
            self._stall.arm(self.stall_timeout)
        exchange = self._exchange
        if exchange is not None and exchange.producer is not None:
            exchange.producer.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._stall.cancel()
        exchange = self._exchange
        if exchange is not None and exchange.producer is not None:
            exchange.producer.resume_reading()

    def _maybe_preface(self, data: bytes) -> bool:
        """True if the connection's first bytes were taken: kept as a part of the HTTP/2
        preface, or handed over with the whole of it. False: HTTP/1.1, parse ``data``."""
        seen = bytes(self._buf) + data if self._buf else data
        if len(seen) < len(H2_PREFACE) and H2_PREFACE.startswith(seen):
            self._buf += data  # could still be the preface; the head timer runs meanwhile
            return True
        on_preface, self._on_preface = self._on_preface, None
        if not seen.startswith(H2_PREFACE):
            return False
        transport, on_lost, self._on_lost = self.transport, self._on_lost, None
        self.state = CLOSED
        self._buf = bytearray()
        self._gone()  # no longer this transport's protocol (the count goes on with on_lost)
        on_preface(transport, seen, on_lost)  # type: ignore[arg-type,misc]
        return True

    # ---- requests ------------------------------------------------------------------
    def _parse_head(self, scanned: int = 0, data: bytes | None = None) -> None:
        """Parse the head in ``_buf`` if complete; ``scanned`` bytes are known not to hold
        its end. ``data``: a read to parse as it is, ``_buf`` being empty (kept in it when
        it holds no whole head)."""
        # Also scheduled with call_soon after a response when pipelined bytes wait: by
        # then data_received may already have started the next request.
        if self.state is not HEAD:
            return
        buf: bytes | bytearray = self._buf if data is None else data
        if buf[:2] == b"\r\n":
            if data is not None:
                self._buf += data
                buf, data = self._buf, None
            scanned = 0
            skip_empty_lines(buf)  # type: ignore[arg-type]
        if not buf:
            return
        cfg = self._cfg
        try:
            end = find_head_end(buf, cfg.max_head_bytes, scanned)
            if end < 0:
                if data is not None:
                    self._buf += data
                return
            head = buf[:end] if data is not None else bytes(buf[:end])
            common = read_common_head(head, cfg.max_uri_bytes)  # else h11 judges it
            length = check_head(head) if common is None else common.length
            # An upload streams to the handler, which applies its own limit (bodystream.py).
            if length is not None and length > cfg.max_body_bytes and (
                    length >= 1 << 62 or not may_stream(head)):
                raise HeadRejected("request body too large", 413)  # before the body is sent
            head_ns = self._queued_ns or time.perf_counter_ns()  # a queued head: when read
            self._queued_ns = 0
            if common is None:
                event, headers, expect_continue = parse_head_h11(head, cfg.max_head_bytes,
                                                                 cfg.max_uri_bytes)
                chunked, content_type = is_chunked(headers), header_value(headers, b"content-type")
            else:  # no Transfer-Encoding; the Content-Type already found
                event, headers, expect_continue = common, common.headers, False
                chunked, content_type = False, common.content_type
            streamed = streams_body(event.method, content_type) and length != 0
            if length is not None and length > cfg.max_body_bytes and not streamed:
                raise HeadRejected("request body too large", 413)
            if data is None:
                self._buf = bytearray()
        except HeadRejected as exc:
            self._reject(exc.status, str(exc), buf)
            return
        rest = buf[end:] if data is not None else bytes(buf[end:])
        reader = (None if not (chunked or streamed) and len(rest) >= (length or 0)  # all here
                  else ChunkedBody(NO_LIMIT if streamed else cfg.max_body_bytes,
                                   cfg.max_head_bytes) if chunked else FixedBody(length or 0))
        http11 = event.http_version == b"1.1"
        keep_alive = (keeps_alive(event, headers) if common is None or common.may_close
                      else http11)
        # positional (headers, keep_alive, http11, head_ns): a class call's keywords build a
        # dict and unpack it again, ~250 ns here (Debian's 3.11)
        exchange = self._exchange = H1Exchange(
            self, event, reader, headers, keep_alive, http11, head_ns)
        exchange.expect_continue = expect_continue
        self.state = BODY
        self._receive_body(exchange, streamed, length, rest)

    def _receive_body(self, exchange: H1Exchange, streamed: bool, length: int | None,
                      rest: bytes) -> None:
        """The body after its head (``rest``: what came with it): taken at once when it is
        all there (no reader: ~130 bytecodes of framing calls less per request), streamed to
        the handler (an upload) or read whole; its idle deadline and pace while more is to
        come."""
        if exchange.reader is None:  # the whole body is in ``rest`` (0 bytes: no body)
            if length:
                exchange.body.append(rest if len(rest) == length else rest[:length])
                exchange.body_size = length
                rest = rest[length:]
            self._dispatch(rest)
            return
        if streamed:
            exchange.stream = BodyStream(self._pause_upload, self._resume_upload, declared=length)
            self._start(exchange)
        self._feed_body(rest)
        if self.state is BODY:  # the body is still to come
            cfg = self._cfg
            self._deadline.arm(cfg.body_idle_timeout_s)
            exchange.pace = BodyPace.start(self.loop, cfg, self._body_too_slow)
            if exchange.pace is not None:
                exchange.pace.add(exchange.body_size)

    def _feed_body(self, data: bytes) -> None:
        exchange = self._exchange
        assert exchange is not None
        try:
            rest = exchange.receive(data)
        except BodyRejected as exc:
            if exchange.stream is not None:
                exchange.stream.fail(exc)
            self._reject(exc.status, str(exc))
            return
        stream = exchange.stream
        if stream is not None:
            for piece in exchange.body:
                stream.feed(piece)
            exchange.body.clear()
        if rest is not None:
            self._dispatch(rest)
        elif exchange.expect_continue and self.transport is not None:
            exchange.expect_continue = False
            self.transport.write(_CONTINUE)

    def _body_too_slow(self) -> None:
        exchange = self._exchange
        if exchange is not None:
            exchange.pace = None
        if self.state is BODY:
            self._reject(408, "request body too slow")

    def _dispatch(self, leftover: bytes) -> None:
        exchange = self._exchange
        assert exchange is not None
        if leftover:  # pipelined bytes (the buffer is empty while a body is read)
            self._buf = bytearray(leftover)
        if self._kept_alive:
            # Disarmed but kept: the next keep-alive wait re-arms the same timer, no call_at
            # (~4 us a request in a running server); it held one while idle anyway.
            self._deadline.cancel()
        else:  # a first request's head timer (~0.7 KiB) would stay for the whole answer
            self._deadline.stop()
        exchange.stop_receiving()
        self.state = BUSY
        if exchange.stream is not None:  # an upload: its handler is already running
            exchange.stream.finish()
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()  # type: ignore[union-attr]
            return
        self._start(exchange)

    def _start(self, exchange: H1Exchange) -> None:
        if self._turn_taken:  # queued unparsed (``_queue``): it has waited its turn
            self._turn_taken = False
            self._begin(exchange)
        else:
            self._pace(self._begin, exchange)

    def _queue(self, data: bytes) -> None:
        """A whole head read while other requests wait their turn: kept unparsed in the same
        line (``StartPacer.later``), and parsed when its turn comes. Parsed now, it would wait
        all the same, and the parse (~6 us) would run ahead of the requests already waiting:
        in a burst, every later arrival's parse delayed the first bytes of the earlier ones.
        Its time of arrival is kept (the request's ``received_ns``: its wait counts in its
        latency). Waiting in Kraken's line is not a slow client: the head timer stops (the
        keep-alive timer, idle, is kept for reuse); more bytes meanwhile are kept as
        pipelined bytes are (bounded: reading pauses past ``pipeline_buffer_bytes``)."""
        self._queued_ns = time.perf_counter_ns()
        self.state = QUEUED
        self._hold(data)  # one read may bring a large body: bounded from the first
        if self._kept_alive:
            self._deadline.cancel()
        else:
            self._deadline.stop()
        self._starts.later(self._take_turn)

    def _take_turn(self) -> None:
        """A queued request's turn: parsed, and its handler begun at once (``_start``)."""
        if self.state is not QUEUED:  # closed while it waited
            return
        self.state = HEAD
        self._turn_taken = True
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._parse_head(0)
        if self.state is HEAD:  # no whole head after all (e.g. blank lines first): in time
            self._deadline.arm(self._cfg.head_timeout_s)

    def _begin(self, exchange: H1Exchange) -> None:
        if exchange is not self._exchange:  # the connection closed while the request waited
            return
        request = exchange.request(self.peer)
        # A Task named here: one left unnamed formats "Task-<n>" for itself (~0.3 us a request).
        self._task = asyncio.Task(run_handler(self._handler, request, exchange, self._handler_done,
                                              self._answers), loop=self.loop, name=_TASK_NAME)

    def _pause_upload(self) -> None:
        """The handler holds enough of the upload: stop reading until it takes some."""
        if self.state is BODY:
            self._pause_reading()
            self._deadline.cancel()  # waiting on the provider is not an idle client

    def _resume_upload(self) -> None:
        if self.state is BODY and self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
            self._deadline.arm(self._cfg.body_idle_timeout_s)

    def _handler_done(self) -> None:
        """The handler's task ends. A handler may still run after end(): the next request's
        task is not ours. (No local holds the task: a cancelled task's traceback would keep
        it in a cycle. The loop is passed: ``current_task()`` alone costs a getpid syscall.)"""
        if self._task is asyncio.current_task(self.loop):
            self._task = None

    @property
    def tasks(self) -> list[asyncio.Task]:
        """Running handler tasks (zero or one here; HTTP/2 may have many)."""
        task = self._task
        return [task] if task is not None and not task.done() else []

    @property
    def task(self) -> asyncio.Task | None:
        """The handler task of the request in flight, if any."""
        return self._task

    # ---- responses -----------------------------------------------------------------
    def response_ended(self, exchange: H1Exchange) -> None:
        """``exchange.end()``: close, or wait for the next request (maybe pipelined)."""
        if not exchange.keep_alive or self.draining or self.state is BODY:
            # (BODY: answered before its upload ended, e.g. 413: the rest is drained, dropped)
            self._close()
            return
        self.state = HEAD
        self._exchange = None
        self._kept_alive = True
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        buf = self._buf
        if buf:  # the usual buffer is empty: no call (~0.4 us a request at c=32, py-spy)
            skip_empty_lines(buf)
        if buf:  # the next pipelined request, parsed after this task (with what is read by then)
            self._unscanned = True
            self._deadline.arm(self._cfg.head_timeout_s)
            self.loop.call_soon(self._parse_head)
        else:
            self._idle = True
            self._deadline.arm(self._cfg.keepalive_timeout_s)

    def abort(self) -> None:
        """Drop the connection now: the response in flight is cut."""
        self._detach()
        self.state = CLOSED
        self._deadline.cancel()
        if self.transport is not None and not self.disconnected:
            self.transport.abort()

    def close_when_idle(self) -> None:
        """Draining: close now if no request is in flight, else after its response."""
        self.draining = True
        if self.state is HEAD and not self._buf:
            self._close()

    # ---- helpers -------------------------------------------------------------------
    def _detach(self) -> None:
        """Forget the exchange in flight: it may send nothing more."""
        exchange = self._exchange
        if exchange is not None:
            self._exchange = None
            if exchange.stream is not None:
                exchange.stream.fail(ConnectionResetError("the upload was cut"))
            exchange.shut()

    def _hold(self, data: bytes) -> None:
        """Keep bytes read ahead of their parse (pipelined, or a queued request's): reading
        pauses once ``pipeline_buffer_bytes`` are held."""
        self._buf += data
        if len(self._buf) > self._cfg.pipeline_buffer_bytes:
            self._pause_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _reject(self, status: int, reason: str, head: bytes | bytearray = b"") -> None:
        """A protocol error: answer ``status`` and close; nothing reaches the gateway. The
        answer is in the wire format of the path the head showed (``head``: one being read)."""
        err = rejection(status, reason)
        log.debug("rejected request from %s: %d %s", client_tag(self.peer), status, reason)
        path = self._exchange.path if self._exchange else request_path(head or self._buf)
        self._detach()
        if self.transport is None or self.disconnected or self.state is CLOSED:
            self.state = CLOSED
            return
        # A fresh exchange, whatever the request was; its end() closes (no keep-alive).
        self.state = BUSY
        self._exchange = H1Exchange(self)
        self._exchange.respond(*self._answers(err, path))

    def _close(self) -> None:
        """Finish the connection after the last response: FIN, then linger."""
        self.state = CLOSED
        self._detach()
        self._buf = bytearray()
        self._deadline.cancel()
        self._linger()

    def _on_timeout(self) -> None:
        state = self.state
        if state is HEAD and self._on_preface is not None and self.transport is not None:
            # Nothing decided yet (silence, or a part of the HTTP/2 preface): closed, unanswered.
            self.state = CLOSED
            self.transport.close()
        elif state is BODY or (state is HEAD and self._buf):
            self._reject(408, "request timeout")
        elif state is HEAD:
            self._close()  # idle keep-alive, or a connection that never sent a byte
        elif state is CLOSED:
            self._lingered()
