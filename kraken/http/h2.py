"""Inbound HTTP/2: one ``asyncio.Protocol`` per connection, framing with h2.

Each stream is one request through the same handler as HTTP/1.1: headers and body are
collected (bounded like h1: ``max_head_bytes`` → 431, ``max_body_bytes`` → 413), then
``handler(request, stream)`` runs in its own task; the ``H2Stream`` is that request's
``ResponseSink``. A client RST_STREAM, a stream error or the loss of the connection cancels
the task, and with it the provider call.

Frame-level policing (RFC 9113 checks h2 lacks, flood and reset counters) lives in
``h2limits.GuardedH2Connection``, which never does I/O; this module owns the transport.

Stream states (request side, then response side):
    RECV ──END_STREAM──▶ RUN (its handler's task owns the response once its turn of the loop
                              comes: ``kraken/http/starts.py``)
    RECV ──over a limit / body timeout / CONNECT──▶ REJECTED (error response sent from here)
    RECV | RUN ──RST_STREAM either way / stream error / connection lost──▶ closed
    response: start ──▶ write* ──▶ end ──(data queued beyond the client's window drains)──▶ closed

Response flow control: DATA never exceeds the client's windows; bytes beyond them wait in a
per-stream buffer, and once that holds ``stream_buffer_bytes`` the stream's producer (the
provider connection) is paused until WINDOW_UPDATEs drain half of it. A full transport
(``pause_writing``) pauses every producer.

Slow readers: a stream whose queued bytes wait for a window while its producer is paused
(or done) for ``send_stall_timeout_s`` is reset (RST_STREAM CANCEL), which cancels its
handler and the provider call; a transport that stays paused that long is aborted with all
its streams. Slow uploads get h1's ``BodyPace`` per stream besides the idle timeout.

Connection states: OPEN ──close_when_idle / client GOAWAY──▶ DRAINING (graceful GOAWAY,
streams in flight finish) ──idle──▶ CLOSED; any ──connection error / flood──▶ GOAWAY with
its code, tasks cancelled, CLOSED. Closing is lingering, as in h1 (``connection.py``), so
the client gets the GOAWAY rather than a TCP reset.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged,
                       RequestReceived, StreamEnded, StreamReset, WindowUpdated)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from kraken.config import ServerConfig
from kraken.http import h2upload
from kraken.http.answers import ErrorAnswers, plain_answers, rejection
from kraken.http.connection import STALL_LINES, Handler, InboundConnection, run_handler
from kraken.http.h1body import BodyPace
from kraken.http.h2limits import (Calm, GuardedH2Connection, H2Limits,
                                  StreamRejected)
from kraken.http.h2stream import RECV, REJECTED, RUN, H2Stream
from kraken.logs import Throttle, client_tag
from kraken.timers import Deadline

log = logging.getLogger("kraken.http")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What a cleartext listener sniffs to hand a connection to HTTP/2 (prior knowledge)."""

OPEN, DRAINING, CLOSED = "OPEN", "DRAINING", "CLOSED"

_BODY_BUDGET_FACTOR = 4
"""Request bodies still being received on one connection may total this many times
``max_body_bytes``; the stream that crosses it gets 413 (h1 buffers one body at a time)."""
_SETTINGS_MOVING_DATA = (SettingCodes.INITIAL_WINDOW_SIZE, SettingCodes.MAX_FRAME_SIZE)
_CALM_LINES = Throttle()  # the ENHANCE_YOUR_CALM line: a client earns one per connection


class H2Connection(InboundConnection):
    """One client connection speaking HTTP/2 (after TLS ALPN "h2" or a cleartext preface).

    ``initial_data``: bytes a sniffer already read from the socket (starting with ``PREFACE``).
    """

    def __init__(self, handler: Handler, cfg: ServerConfig, tracker: set | None = None, *,
                 initial_data: bytes = b"", limits: H2Limits | None = None,
                 always_headers: list[tuple[bytes, bytes]] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 answers: ErrorAnswers = plain_answers):
        super().__init__(handler, cfg, tracker, on_lost, answers=answers)
        self.always_headers = list(always_headers or ())
        """Headers on every response (e.g. HSTS over TLS)."""
        self._limits = limits or H2Limits()
        self._initial = initial_data
        self._h2 = GuardedH2Connection(cfg.max_head_bytes, self._limits)
        self.state = OPEN
        self.writing_paused = False
        self.stream_buffer_bytes = self._limits.stream_buffer_bytes
        self._streams: dict[int, H2Stream] = {}
        self._blocked: dict[int, H2Stream] = {}
        """Streams with response bytes waiting for a window, oldest first."""
        self._tasks: set[asyncio.Task] = set()
        self._receiving_bytes = 0
        """Request body bytes held by streams still in RECV."""
        self._idle = False
        self._preface_pending = True
        self._eof_sent = False

    # ---- app-facing ----------------------------------------------------------------
    @property
    def tasks(self) -> list[asyncio.Task]:
        """The handler tasks still running on this connection."""
        return [t for t in self._tasks if not t.done()]

    @property
    def draining(self) -> bool:
        return self.state is not OPEN

    def close_when_idle(self) -> None:
        """Graceful shutdown: GOAWAY (last stream = highest processed), refuse newer streams,
        close once the streams in flight have finished."""
        if self.state is not OPEN:
            return
        self.state = DRAINING
        if not self.disconnected:
            self._h2.goaway()
            self._flush()
        self._maybe_close()

    def abort(self) -> None:
        """Drop the connection now (drain deadline passed): every handler task is cancelled."""
        self._cancel_all()
        self.state = CLOSED
        self._deadline.cancel()
        if self.transport is not None and not self.disconnected:
            self.transport.abort()

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._opened(transport)
        self._h2.open_connection()
        self._flush()
        self._deadline.arm(self._cfg.head_timeout_s)  # the client preface must arrive in time
        if self._initial:
            data, self._initial = self._initial, b""
            self.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self._gone()
        self._h2.release()  # h2 drops its references to us too (see _gone)
        for stream in list(self._streams.values()):
            producer = stream.producer
            if producer is not None and stream.producer_paused:
                producer.resume_reading()
        self._cancel_all()

    def data_received(self, data: bytes) -> None:
        if self.state is CLOSED:
            return  # lingering: dropped
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as exc:  # h2 has queued GOAWAY with exc.error_code
            self._connection_error(exc)
            return
        except Exception:  # a bug in the stack must not leave a half-parsed connection
            log.exception("HTTP/2 input from %s could not be processed", client_tag(self.peer))
            self.abort()
            return
        if self._preface_pending and self._h2.preface_received:
            self._preface_pending = False
            self._update_idle(force=True)
        self._handle(events)
        self._flush()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.stall_timeout > 0:
            self._stall.arm(self.stall_timeout)
        for stream in self._streams.values():
            stream.update_producer()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._stall.cancel()
        for stream in list(self._streams.values()):
            stream.update_producer()

    # ---- events --------------------------------------------------------------------
    def _handle(self, events: list) -> None:
        ready: list[H2Stream] = []
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                self._on_data(event)
            elif kind is RequestReceived:
                self._on_request(event)
            elif kind is StreamEnded:
                stream = self._streams.get(event.stream_id)
                if stream is not None and stream.phase is RECV:
                    ready.append(stream)
                elif stream is not None and stream.upload is not None:
                    h2upload.ended(stream)
            elif kind is WindowUpdated:
                if event.stream_id:
                    stream = self._streams.get(event.stream_id)
                    if stream is not None and stream.pending:
                        self.pump(stream)
                else:
                    self._pump_blocked()
            elif kind is StreamReset or kind is StreamRejected:
                self._on_reset(event.stream_id)
            elif kind is RemoteSettingsChanged:
                if any(code in event.changed_settings for code in _SETTINGS_MOVING_DATA):
                    self._pump_blocked()
            elif kind is ConnectionTerminated:
                self._on_goaway(event)
            # PING/SETTINGS acks, PRIORITY, trailers, refused streams: h2 or h2limits answered
        for stream in ready:  # after the whole batch: a stream reset in it never starts
            if stream.phase is RECV and not stream.closed:
                self._dispatch(stream)

    def _on_request(self, event: RequestReceived) -> None:
        stream = H2Stream(self, event.stream_id)
        self._streams[event.stream_id] = stream
        self._update_idle()
        stream.head_ns = time.perf_counter_ns()
        cfg = self._cfg
        size = stream.take_head(event.headers)
        headers = stream.headers
        if size > cfg.max_head_bytes:
            self._reject(stream, 431, "request header fields too large")
        elif stream.method == "CONNECT":
            self._reject(stream, 405, "CONNECT is not supported")
        elif len(stream.target) > cfg.max_uri_bytes:
            self._reject(stream, 414, "request URI too long")
        elif _declared_length(headers) > cfg.max_body_bytes and not h2upload.is_upload(stream):
            self._reject(stream, 413, "request body too large")  # before the body is sent
        elif event.stream_ended is None:
            stream.deadline = Deadline(self.loop, lambda: self._on_body_timeout(stream))
            stream.deadline.arm(cfg.body_idle_timeout_s)
            stream.pace = BodyPace.start(self.loop, cfg, lambda: self._on_body_timeout(stream))
            h2upload.start(stream, self._h2, self._flush, self._dispatch)  # if an upload: now

    def _on_data(self, event: DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None and stream.upload is not None and not stream.closed:
            h2upload.feed(stream, event, self._h2)
            return
        if stream is not None and stream.phase is RECV and not stream.closed:
            size = len(event.data)
            stream.body_size += size
            self._receiving_bytes += size
            if stream.deadline is not None:
                stream.deadline.touch()
            if stream.pace is not None:
                stream.pace.add(size)
            if stream.body_size > self._cfg.max_body_bytes:
                self._reject(stream, 413, "request body too large")
            elif self._receiving_bytes > self._cfg.max_body_bytes * _BODY_BUDGET_FACTOR:
                self._reject(stream, 413, "too many request bodies in flight on this connection")
            else:
                stream.add_body(event.data)
        if event.flow_controlled_length:
            # Bodies are bounded by max_body_bytes, so data is acknowledged as it arrives.
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)

    def _on_reset(self, stream_id: int) -> None:
        """The client reset the stream, or broke it (h2 or h2limits reset it)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.phase is RECV:
            self._receiving_bytes -= stream.body_size
        stream.reset = True
        self._close_stream(stream)
        task = stream.task
        if task is not None and not task.done():
            task.cancel()
        self._forget(stream)

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        if event.error_code != ErrorCodes.NO_ERROR:
            log.debug("client %s sent GOAWAY %s", client_tag(self.peer), event.error_code)
            self._cancel_all()
            self._close()
        else:
            self.close_when_idle()

    # ---- requests ------------------------------------------------------------------
    def _dispatch(self, stream: H2Stream) -> None:
        if stream.upload is None:
            stream.stop_receiving()
        self._receiving_bytes -= stream.body_size
        stream.phase = RUN
        self._pace(self._begin, stream)

    def _begin(self, stream: H2Stream) -> None:
        if stream.reset or self._streams.get(stream.stream_id) is not stream:
            return  # reset, or the connection gone, while it waited for its turn
        task = self.loop.create_task(run_handler(self._handler, stream.request(self.peer), stream,
                                                 None, self._answers))
        stream.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, stream))

    def _task_done(self, task: asyncio.Task, stream: H2Stream) -> None:
        self._tasks.discard(task)
        stream.task = None  # a cancelled task's traceback holds the stream: no cycle
        self._forget(stream)

    def _reject(self, stream: H2Stream, status: int, reason: str) -> None:
        """Answer ``status`` on this stream without the handler, and stop its upload."""
        err, peer = rejection(status, reason), client_tag(self.peer)
        log.debug("rejected stream %d from %s: %d %s", stream.stream_id, peer, status, reason)
        if stream.phase is RECV:
            self._receiving_bytes -= stream.body_size
        stream.phase = REJECTED
        stream.take_body()
        stream.stop_receiving()
        # a 405 here is CONNECT (no resource to ask about): Allow names what Kraken serves
        stream.respond(*self._answers(err, stream.path, [(b"allow", b"GET, HEAD, POST")]
                                      if status == 405 else None))

    def _on_body_timeout(self, stream: H2Stream) -> None:
        if h2upload.timed_out(stream):  # its handler answers (its read fails)
            return
        if stream.phase is RECV and not stream.closed:
            self._reject(stream, 408, "request timeout")
            self._flush()

    # ---- responses -----------------------------------------------------------------
    def send_headers(self, stream: H2Stream, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            self._h2.send_headers(stream.stream_id, headers)
        except ProtocolError:  # the connection failed under the handler
            self._close_stream(stream)
            return
        if not stream.corked:
            self._flush()

    def write_data(self, stream: H2Stream, data: bytes) -> None:
        if not stream.pending and not stream.ending and self.state is not CLOSED:
            # The usual case, an SSE event inside the window: one frame, nothing buffered.
            try:
                sent = self._h2.send_chunk(stream.stream_id, data)
            except ProtocolError:
                self._close_stream(stream)
                return
            if sent:
                if not stream.corked:
                    self._flush()
                return
        stream.pending.extend(data)
        self.pump(stream)

    def pump(self, stream: H2Stream) -> None:
        """Send what the windows allow of ``stream``'s queued bytes, then END_STREAM if
        ``end()`` was called and nothing is left."""
        if stream.closed or self.state is CLOSED:
            return
        h2 = self._h2
        pending = stream.pending
        sid = stream.stream_id
        try:
            while pending:
                window = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
                if window <= 0:
                    break
                if len(pending) <= window:
                    h2.send_data(sid, bytes(pending), end_stream=stream.ending)
                    pending.clear()
                    if stream.ending:
                        self._response_sent(stream)
                        return
                else:
                    h2.send_data(sid, bytes(pending[:window]))
                    del pending[:window]
            if not pending and stream.ending:
                h2.end_stream(sid)
                self._response_sent(stream)
                return
        except ProtocolError:  # the stream or the connection is gone under us
            self._close_stream(stream)
            return
        finally:
            if not stream.corked:
                self._flush()
        self._blocked.pop(sid, None)
        if pending:
            self._blocked[sid] = stream  # to the back: the next window goes round-robin
        stream.update_producer()

    def stream_stalled(self, stream: H2Stream) -> None:
        """``stream``'s bytes waited ``send_stall_timeout_s`` for a window: reset it, as if
        the client had (its handler is cancelled, the provider call with it)."""
        if stream.closed or not stream.stalled:
            return
        if (held := STALL_LINES.due()) is not None:  # a client may hold many: throttled
            log.info("client %s opened no window on stream %d for %.0f s: stream reset (%d more"
                     " stalls since the last line)", client_tag(self.peer), stream.stream_id,
                     self.stall_timeout, held)
        stream.reset = True
        self.reset_stream(stream, ErrorCodes.CANCEL)
        task = stream.task
        if task is not None and not task.done():
            task.cancel()

    def _pump_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            self.pump(stream)

    def _response_sent(self, stream: H2Stream) -> None:
        """END_STREAM is out. A client still uploading is told to stop (RFC 9113 §8.1)."""
        h2_stream = self._h2.streams.get(stream.stream_id)
        if h2_stream is not None and not h2_stream.closed:
            try:
                self._h2.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
            except ProtocolError:
                pass
        self._close_stream(stream)
        self._forget(stream)

    def reset_stream(self, stream: H2Stream, code: ErrorCodes) -> None:
        if not stream.closed and self.state is not CLOSED:
            try:
                self._h2.reset_stream(stream.stream_id, code)
            except ProtocolError:
                pass
            self._flush()
        self._close_stream(stream)
        self._forget(stream)

    def _close_stream(self, stream: H2Stream) -> None:
        stream.drop()
        self._blocked.pop(stream.stream_id, None)

    def _forget(self, stream: H2Stream) -> None:
        """Remove a finished stream: closed, and its handler (if any) done."""
        if stream.closed and (stream.task is None or stream.task.done()):
            if self._streams.pop(stream.stream_id, None) is not None:
                self._update_idle()
                self._maybe_close()

    # ---- connection ----------------------------------------------------------------
    def flush(self) -> None:
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and not self._eof_sent and self.transport is not None \
                and not self.disconnected and not self.transport.is_closing():
            self.transport.write(data)

    def _connection_error(self, exc: ProtocolError) -> None:
        if isinstance(exc, Calm):  # a client may cause one per connection: throttled
            if (held := _CALM_LINES.due()) is not None:
                log.warning("HTTP/2 client %s: %s; GOAWAY ENHANCE_YOUR_CALM (%d more since the "
                            "last line)", client_tag(self.peer), exc.kind, held)
        else:
            log.debug("HTTP/2 connection error from %s: %s", client_tag(self.peer), exc)
        self._flush()  # the GOAWAY h2 queued
        self._cancel_all()
        self._close()

    def _cancel_all(self) -> None:
        for stream in list(self._streams.values()):
            stream.reset = True
            self._close_stream(stream)
            task = stream.task
            if task is not None and not task.done():
                task.cancel()

    def _maybe_close(self) -> None:
        if self.state is DRAINING and not self._streams and not self.tasks:
            self._close()

    def _update_idle(self, force: bool = False) -> None:
        """Arm the keep-alive deadline while no stream is open; disarm it otherwise."""
        if self.state is not OPEN or self._preface_pending:
            return
        idle = not self._streams
        if idle and (force or not self._idle):
            self._deadline.arm(self._cfg.keepalive_timeout_s)
        elif not idle and (force or self._idle):
            self._deadline.cancel()
        self._idle = idle

    def _on_timeout(self) -> None:
        if self.state is CLOSED:
            self._lingered()
        elif self._preface_pending:
            self._close()  # never spoke HTTP/2 in time
        else:
            self.close_when_idle()  # idle keep-alive: GOAWAY, then close

    def _close(self) -> None:
        """Finish the connection: FIN, then linger."""
        if self.state is CLOSED:
            return
        self._flush()
        self.state = CLOSED
        self._deadline.cancel()
        self._eof_sent = self._linger()


_declared_length = h2upload.declared_length
