"""Outbound HTTP/2: many provider calls multiplexed over one TLS connection.

``H2UpstreamConnection`` owns the transport and an h2 connection; each call is an
``h2exchange.H2Exchange`` bound to one stream (its states are there). Shaped like the
inbound ``http/h2.py``: ``data_received`` hands each h2 event to its own handler
(``_EVENT_HANDLERS``). Responses are pushed into the exchange's ``ResponseHandler`` from
there, as on HTTP/1.1: DATA reaches ``on_data`` as received and every handler touched by a
read gets ``on_read_end``.

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
because RFC 9113 §8.7 guarantees the provider did nothing with it. The retry goes on another
connection (``OriginPool.acquire(refused)``): a DRAINING one takes no stream, and one that
refused a stream may refuse the next.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.events import (ConnectionTerminated, DataReceived, RemoteSettingsChanged,
                       ResponseReceived, StreamEnded, StreamReset, WindowUpdated)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from kraken.errors import UpstreamError
from kraken.upstream.h2exchange import DONE, OPEN, READY, H2Exchange
from kraken.h2common import GoawayTolerantH2Connection, connection_specific

__all__ = ["CONNECTION_WINDOW", "MAX_STREAMS", "STREAM_WINDOW", "H2Exchange",
           "H2UpstreamConnection"]

STREAM_WINDOW = 256 * 1024
"""Bytes a provider may send on one stream ahead of the relay: what a paused stream buffers."""
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_STREAMS = 100
"""Streams per connection even if the provider allows more (the pool then opens another):
one TCP connection's loss or head-of-line stall should not take down more than this."""
MAX_HEADER_LIST = 64 * 1024
_LAST_STREAM_ID = 2**31 - 1

Fields = list[tuple[bytes, bytes]]


class H2UpstreamConnection(asyncio.Protocol):
    """Client side of one TLS connection that negotiated ``h2``."""

    def __init__(self, authority: str, read_timeout_s: float):
        self.authority = authority.encode()
        self.read_timeout = read_timeout_s
        self.loop = asyncio.get_event_loop()
        self.h2 = GoawayTolerantH2Connection(
            H2Configuration(client_side=True, header_encoding=None))
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
        self._touched: list[H2Exchange] = []
        """Exchanges whose handler got something in the current read (``on_read_end`` due)."""
        self._credit = 0
        """Connection window owed for DATA on paused streams in the current read."""

    # ---- pool side -----------------------------------------------------------------
    @property
    def can_open(self) -> bool:
        return not self.closed and not self.draining and self.active < self._limit

    def reserve(self) -> H2Exchange:
        self.active += 1
        return H2Exchange(self)

    def release(self, ex: H2Exchange) -> None:
        """The pool is done with ``ex``: an unfinished stream is cancelled, its slot freed.
        So is one answered before its request body ended (an early answer): Kraken's half
        stays open otherwise, counted against the provider's MAX_CONCURRENT_STREAMS."""
        if ex.state is OPEN or ex.state is READY:
            ex.abort()
        elif ex.state is DONE and (ex.more or ex.body):
            ex.more, ex.body = False, b""
            self.reset(ex, ErrorCodes.CANCEL)
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
        self.h2.release()  # no cycle left: freed at once, like the inbound connection
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
        handlers = _EVENT_HANDLERS
        for event in events:
            on_event = handlers.get(event.__class__)
            if on_event is not None:  # others (PING, SETTINGS acks, ...) h2 has answered
                on_event(self, event)
        if self._credit:
            if not self.closed:
                h2.increment_flow_control_window(self._credit)
            self._credit = 0
        self._flush()
        if self._touched:
            touched, self._touched = self._touched, []
            for ex in touched:
                handler = ex.handler
                if handler is not None:
                    handler.on_read_end()

    def pause_writing(self) -> None:  # request bodies are small; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # ---- events (one handler per h2 event; ``data_received`` dispatches) ------------
    def _on_data(self, event: DataReceived) -> None:
        sid = event.stream_id
        size = event.flow_controlled_length
        ex = self.streams.get(sid)
        if ex is None:  # abandoned or refused: only the connection window matters
            if size:
                self.h2.acknowledge_received_data(size, sid)
            return
        ex.received_any = True
        ex.deadline.touch()
        handler = ex.handler
        if handler is not None and event.data:
            handler.on_data(event.data)
            if ex not in self._touched:
                self._touched.append(ex)
        if size:
            if ex.paused and ex.state is OPEN:
                ex.owed += size
                self._credit += size
            else:
                self.h2.acknowledge_received_data(size, sid)

    def _on_response(self, event: ResponseReceived) -> None:
        ex = self.streams.get(event.stream_id)
        if ex is None:
            return
        ex.received_any = True
        ex.deadline.touch()
        handler = ex.handler
        if handler is not None:
            handler.on_head(*_status_and_fields(event.headers))
            if ex not in self._touched:
                self._touched.append(ex)

    def _on_stream_ended(self, event: StreamEnded) -> None:
        ex = self.streams.pop(event.stream_id, None)
        if ex is not None:
            self._unblock(ex)
            ex._end()

    def _on_stream_reset(self, event: StreamReset) -> None:
        ex = self.streams.pop(event.stream_id, None)
        if ex is not None:
            self._unblock(ex)
            refused = event.error_code == ErrorCodes.REFUSED_STREAM
            ex._fail(UpstreamError("provider refused the request" if refused
                                   else "provider reset the stream"), refused=refused)

    def _on_window_updated(self, event: WindowUpdated) -> None:
        if self._blocked:
            self._send_blocked()

    def _on_settings(self, event: RemoteSettingsChanged) -> None:
        self._limit = min(MAX_STREAMS, self.h2.remote_settings.max_concurrent_streams)
        if self._blocked:
            self._send_blocked()

    def _on_goaway(self, event: ConnectionTerminated) -> None:
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
            elif connection_specific(name, value):
                continue
            else:
                fields.append((name, value))
        sid = h2.get_next_available_stream_id()
        try:
            h2.send_headers(sid, fields, end_stream=not body and not ex.more)
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
    def send_body(self, ex: H2Exchange) -> None:
        """More of a streamed request body, or its end (``H2Exchange.send_more``/``end_body``)."""
        try:
            if ex.body:
                self._send_body(ex)
            elif not ex.more:
                self.h2.end_stream(ex.stream_id)
        except ProtocolError:
            pass  # the stream is gone: its response side reports it
        self._flush()

    def _send_body(self, ex: H2Exchange) -> None:
        h2, sid, body = self.h2, ex.stream_id, ex.body
        while body:
            size = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size, len(body))
            if size <= 0:
                break
            h2.send_data(sid, body[:size], end_stream=size == len(body) and not ex.more)
            body = body[size:]
        ex.body = body
        if body:
            if ex not in self._blocked:
                self._blocked.append(ex)
        else:
            self._unblock(ex)
            ex._wake()

    def _send_blocked(self) -> None:
        for ex in list(self._blocked):
            if ex.state is OPEN:
                self._send_body(ex)
            else:
                self._unblock(ex)

    def _unblock(self, ex: H2Exchange) -> None:
        if self._blocked and ex in self._blocked:
            self._blocked.remove(ex)

    def _fail_all(self, exc: UpstreamError) -> None:
        streams, self.streams = self.streams, {}
        self._blocked.clear()
        for ex in streams.values():
            ex._fail(type(exc)(exc.message))

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)


_EVENT_HANDLERS: dict[type, Callable[[H2UpstreamConnection, Any], None]] = {
    DataReceived: H2UpstreamConnection._on_data,
    ResponseReceived: H2UpstreamConnection._on_response,
    StreamEnded: H2UpstreamConnection._on_stream_ended,
    StreamReset: H2UpstreamConnection._on_stream_reset,
    WindowUpdated: H2UpstreamConnection._on_window_updated,
    RemoteSettingsChanged: H2UpstreamConnection._on_settings,
    ConnectionTerminated: H2UpstreamConnection._on_goaway,
}
"""What ``data_received`` calls per h2 event. Plain functions, not bound methods: a table
of bound methods on the connection would be a reference cycle, freed only by a full gc."""


def _status_and_fields(headers: Fields) -> tuple[int, Fields]:
    """``:status`` and the regular fields of a response header block."""
    status = 0
    fields: Fields = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":status":
                status = int(value)
        else:
            fields.append((name, value))
    return status, fields
