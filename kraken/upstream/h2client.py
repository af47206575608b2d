"""Outbound HTTP/2: many provider calls multiplexed over one TLS connection.

``H2UpstreamConnection`` owns the transport and an h2 ``H2Connection``. Each call is an
``H2Exchange`` bound to one stream and shaped like ``UpstreamConnection`` (``send``,
``pause_reading``/``resume_reading``, ``abort``, ``used``, ``received_any``), so the relay
drives either protocol unchanged; ``OriginPool.acquire`` hands out exchanges and
``OriginPool.release`` gives their stream slot back. Responses are pushed into the
exchange's ``ResponseHandler`` from ``data_received``, as on HTTP/1.1: DATA reaches
``on_data`` as received and every handler touched by a read gets ``on_read_end``.

Exchange states:
    READY ──send──▶ OPEN ──END_STREAM──▶ DONE
    OPEN ──RST_STREAM from the provider / GOAWAY above its last id / read timeout /
           connection lost──▶ FAILED (``on_error``)
    READY | OPEN ──abort()──▶ CANCELLED (RST_STREAM CANCEL on this stream only)

Connection states:
    OPEN ──GOAWAY received / stream ids used up / silent for a read timeout──▶ DRAINING
    (no new streams; the ones below GOAWAY's last id finish) ──last exchange released──▶
    CLOSED; any ──connection lost / protocol error──▶ CLOSED, every open stream FAILED.

Flow control toward the provider: a stream's receive window (``STREAM_WINDOW``) is handed
back as its data is delivered. ``pause_reading`` stops that for one stream only, so the
provider stops after one window on it while the other streams keep flowing; the bytes a
paused stream receives are credited to the connection window at once (its stream window
follows on ``resume_reading``), so paused streams can never starve the others.

A stream refused by the provider without being processed (above GOAWAY's last stream id,
or RST_STREAM REFUSED_STREAM) reports ``used >= 2`` with ``received_any`` false: the
relay's "stale connection, retry once on a fresh one" rule then applies, which is safe
because RFC 9113 §8.7 guarantees the provider did nothing with it.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged,
                       ResponseReceived, StreamEnded, StreamReset, WindowUpdated)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from kraken.errors import UpstreamError, UpstreamTimeout
from kraken.http.timers import Deadline

STREAM_WINDOW = 256 * 1024
"""Bytes a provider may send on one stream ahead of the relay: what a paused stream buffers."""
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_STREAMS = 100
"""Streams per connection even if the provider allows more (the pool then opens another):
one TCP connection's loss or head-of-line stall should not take down more than this."""
MAX_HEADER_LIST = 64 * 1024
_LAST_STREAM_ID = 2**31 - 1

READY, OPEN, DONE, FAILED, CANCELLED = "ready", "open", "done", "failed", "cancelled"

_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})


class _ClientH2(H2Connection):
    """h2's connection, except that a GOAWAY lets the streams below its last id finish.

    h2 4.4 closes its state machine on GOAWAY and then rejects every further frame,
    including the DATA of streams the provider promised to complete (RFC 9113 §6.8).
    Not opening new streams afterwards is ``H2UpstreamConnection``'s job.
    """

    def _receive_goaway_frame(self, frame):  # type: ignore[override]
        event = ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class H2Exchange:
    """One request/response on a shared HTTP/2 connection (the pool's unit of acquire)."""

    __slots__ = ("connection", "stream_id", "state", "used", "received_any", "handler",
                 "paused", "owed", "body", "deadline")

    def __init__(self, connection: H2UpstreamConnection):
        self.connection = connection
        self.stream_id = 0
        self.state = READY
        self.used = 0
        """Streams started on the connection, this one included (>= 2 once refused unprocessed)."""
        self.received_any = False
        self.handler = None
        self.paused = False
        self.owed = 0
        """Flow-controlled bytes received while paused: the stream window still owed."""
        self.body = b""
        """Request body bytes still waiting for the provider's window."""
        self.deadline = Deadline(connection.loop, self._on_timeout)

    # ---- the UpstreamConnection interface used by the gateway ----------------------
    def send(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes,
             handler) -> None:
        """Open the stream, send the request and route the response to ``handler``."""
        self.handler = handler
        self.connection.start(self, method, target, headers, body)

    def pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            self.deadline.cancel()  # a stalled client is not a slow provider

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            if self.state is OPEN:
                owed, self.owed = self.owed, 0
                if owed:
                    self.connection.acknowledge(self.stream_id, owed)
                self.deadline.arm(self.connection.read_timeout)

    def abort(self) -> None:
        """Cancel this exchange only: RST_STREAM CANCEL, the connection lives on."""
        self.handler = None
        if self.state is OPEN:
            self.connection.reset(self, ErrorCodes.CANCEL)
        if self.state is OPEN or self.state is READY:
            self.state = CANCELLED
        self.deadline.stop()

    close = abort

    @property
    def closed(self) -> bool:
        return self.state is not READY and self.state is not OPEN

    @property
    def reusable(self) -> bool:
        return False  # a stream carries one exchange; the connection is what is reused

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.connection.transport

    # ---- transitions (called by the connection) ------------------------------------
    def _end(self) -> None:
        self.state = DONE
        self.deadline.stop()
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_end()

    def _fail(self, exc: Exception, *, refused: bool = False) -> None:
        self.state = FAILED
        self.deadline.stop()
        if refused and not self.received_any:
            self.used = max(self.used, 2)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_error(exc)

    def _on_timeout(self) -> None:
        if self.state is OPEN:
            conn = self.connection
            conn.reset(self, ErrorCodes.CANCEL)
            conn.check_alive()
            self._fail(UpstreamTimeout("provider read timed out"))


class H2UpstreamConnection(asyncio.Protocol):
    """Client side of one TLS connection that negotiated ``h2``."""

    def __init__(self, authority: str, read_timeout_s: float):
        self.authority = authority.encode()
        self.read_timeout = read_timeout_s
        self.loop = asyncio.get_event_loop()
        self.h2 = _ClientH2(H2Configuration(client_side=True, header_encoding=None))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Exchange] = {}
        """Open streams by id (request sent, response not finished)."""
        self.active = 0
        """Exchanges handed out by the pool and not yet released."""
        self.started = 0
        self.closed = False
        self.draining = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.on_close: Callable[[H2UpstreamConnection], None] | None = None
        self._limit = MAX_STREAMS
        self._blocked: list[H2Exchange] = []
        """Exchanges whose request body waits for the provider's window."""

    # ---- pool side -----------------------------------------------------------------
    @property
    def can_open(self) -> bool:
        return not self.closed and not self.draining and self.active < self._limit

    def reserve(self) -> H2Exchange:
        self.active += 1
        return H2Exchange(self)

    def release(self, ex: H2Exchange) -> None:
        """The pool is done with ``ex``: an unfinished stream is cancelled, its slot freed."""
        if ex.state is OPEN or ex.state is READY:
            ex.abort()
        self.active -= 1
        if self.active == 0:
            self.idle_since = self.loop.time()
            if self.draining:
                self.close()

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.last_read = self.loop.time()
        h2 = self.h2
        settings = Settings(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        })
        del settings[SettingCodes.ENABLE_CONNECT_PROTOCOL]  # a server-only setting
        h2.local_settings = settings
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - h2.inbound_flow_control_window)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        streams, self.streams = self.streams, {}
        for ex in streams.values():
            ex._fail(UpstreamError("provider closed the connection"))
        if self.on_close is not None:
            self.on_close(self)

    def data_received(self, data: bytes) -> None:
        h2 = self.h2
        try:
            events = h2.receive_data(data)
        except ProtocolError:
            self._flush()  # the GOAWAY h2 queued
            self._fail_all(UpstreamError("malformed HTTP/2 from provider"))
            self.close()
            return
        self.last_read = self.loop.time()
        streams = self.streams
        touched: list[H2Exchange] = []
        credit = 0
        for event in events:
            cls = event.__class__
            if cls is DataReceived:
                sid = event.stream_id
                size = event.flow_controlled_length
                ex = streams.get(sid)
                if ex is None:  # abandoned or refused: only the connection window matters
                    if size:
                        h2.acknowledge_received_data(size, sid)
                    continue
                ex.received_any = True
                ex.deadline.touch()
                handler = ex.handler
                if handler is not None and event.data:
                    handler.on_data(event.data)
                    if ex not in touched:
                        touched.append(ex)
                if size:
                    if ex.paused and ex.state is OPEN:
                        ex.owed += size
                        credit += size
                    else:
                        h2.acknowledge_received_data(size, sid)
            elif cls is ResponseReceived:
                ex = streams.get(event.stream_id)
                if ex is None:
                    continue
                ex.received_any = True
                ex.deadline.touch()
                status = 0
                fields = []
                for name, value in event.headers:
                    if name[:1] == b":":
                        if name == b":status":
                            status = int(value)
                    else:
                        fields.append((name, value))
                if ex.handler is not None:
                    ex.handler.on_head(status, fields)
                    if ex not in touched:
                        touched.append(ex)
            elif cls is StreamEnded:
                ex = streams.pop(event.stream_id, None)
                if ex is not None:
                    self._unblock(ex)
                    ex._end()
            elif cls is StreamReset:
                ex = streams.pop(event.stream_id, None)
                if ex is not None:
                    self._unblock(ex)
                    refused = event.error_code == ErrorCodes.REFUSED_STREAM
                    ex._fail(UpstreamError("provider refused the request" if refused
                                           else "provider reset the stream"), refused=refused)
            elif cls is WindowUpdated:
                if self._blocked:
                    self._send_blocked()
            elif cls is RemoteSettingsChanged:
                self._limit = min(MAX_STREAMS, h2.remote_settings.max_concurrent_streams)
                if self._blocked:
                    self._send_blocked()
            elif cls is ConnectionTerminated:
                self._goaway(event)
        if credit and not self.closed:
            h2.increment_flow_control_window(credit)
        self._flush()
        for ex in touched:
            handler = ex.handler
            if handler is not None:
                handler.on_read_end()

    def pause_writing(self) -> None:  # request bodies are small; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # ---- streams -------------------------------------------------------------------
    def start(self, ex: H2Exchange, method: str, target: str,
              headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        h2 = self.h2
        if self.closed or self.draining:
            ex._fail(UpstreamError("provider connection is closing"), refused=True)
            return
        fields = [(b":method", method.encode()), (b":scheme", b"https"),
                  (b":authority", self.authority), (b":path", target.encode())]
        for name, value in headers:
            name = name.lower()
            if name == b"host":
                fields[2] = (b":authority", value)
            elif name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
                continue
            else:
                fields.append((name, value))
        sid = h2.get_next_available_stream_id()
        try:
            h2.send_headers(sid, fields, end_stream=not body)
        except ProtocolError:  # e.g. the provider lowered MAX_CONCURRENT_STREAMS meanwhile
            ex._fail(UpstreamError("provider refused the request"), refused=True)
            return
        self.started += 1
        ex.used = self.started
        ex.stream_id = sid
        ex.state = OPEN
        self.streams[sid] = ex
        if sid >= _LAST_STREAM_ID - 2:
            self.draining = True
        if body:
            ex.body = body
            self._send_body(ex)
        ex.deadline.arm(self.read_timeout)
        self._flush()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand ``size`` bytes of window back on ``stream_id`` (a paused stream resumed)."""
        if not self.closed:
            self.h2.acknowledge_received_data(size, stream_id)
            self._flush()

    def reset(self, ex: H2Exchange, code: ErrorCodes) -> None:
        self.streams.pop(ex.stream_id, None)
        self._unblock(ex)
        if self.closed:
            return
        try:
            self.h2.reset_stream(ex.stream_id, code)
        except ProtocolError:  # already closed on h2's side
            return
        self._flush()

    def check_alive(self) -> None:
        """A stream timed out: if the whole connection has been silent as long, retire it."""
        if self.loop.time() - self.last_read >= self.read_timeout:
            self.draining = True
            if self.active == 0:
                self.close()

    def close(self) -> None:
        """GOAWAY and close (the pool calls this only once no exchange is in flight)."""
        if self.transport is not None and not self.closed:
            try:
                self.h2.close_connection()
                self._flush()
            except ProtocolError:
                pass
            self.transport.close()
        self.closed = True

    # ---- internals -----------------------------------------------------------------
    def _send_body(self, ex: H2Exchange) -> None:
        h2, sid, body = self.h2, ex.stream_id, ex.body
        while body:
            size = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size, len(body))
            if size <= 0:
                break
            h2.send_data(sid, body[:size], end_stream=size == len(body))
            body = body[size:]
        ex.body = body
        if body:
            if ex not in self._blocked:
                self._blocked.append(ex)
        else:
            self._unblock(ex)

    def _send_blocked(self) -> None:
        for ex in list(self._blocked):
            if ex.state is OPEN:
                self._send_body(ex)
            else:
                self._unblock(ex)

    def _unblock(self, ex: H2Exchange) -> None:
        if self._blocked and ex in self._blocked:
            self._blocked.remove(ex)

    def _goaway(self, event: ConnectionTerminated) -> None:
        """The provider is going away: streams above ``last_stream_id`` were never
        processed (retryable); below it they finish, unless the GOAWAY reports an error."""
        self.draining = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        graceful = event.error_code == ErrorCodes.NO_ERROR
        for sid in [s for s in self.streams if s > last or not graceful]:
            ex = self.streams.pop(sid)
            self._unblock(ex)
            ex._fail(UpstreamError("provider closed the connection (GOAWAY)"), refused=sid > last)
        if not graceful or self.active == 0:
            self.close()

    def _fail_all(self, exc: UpstreamError) -> None:
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        for ex in streams.values():
            ex._fail(type(exc)(exc.message))

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)
