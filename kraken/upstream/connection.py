"""One HTTP/1.1 keep-alive connection to a provider, driven by h11.

The connection runs one exchange at a time and pushes what it parses into a
``ResponseHandler`` from inside ``data_received``: no task hop per chunk, so a provider's
bytes reach the client in the same loop iteration they arrive in.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol

import h11

from kraken.errors import UpstreamError, UpstreamTimeout
from kraken.http.timers import Deadline


class ResponseHandler(Protocol):
    """Receives one upstream response. Called from the event loop, never concurrently."""

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_error(self, exc: Exception) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """Client side of one TCP (or TLS) connection; ``send`` starts an exchange."""

    def __init__(self, origin: str, read_timeout_s: float):
        self.origin = origin
        self._loop = asyncio.get_event_loop()
        self._read_timeout = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self._h11 = h11.Connection(h11.CLIENT)
        self._handler: ResponseHandler | None = None
        self._deadline = Deadline(self._loop, self._on_timeout)
        self.closed = False
        self.used = 0
        """Exchanges started on this connection (a reused one may have gone stale)."""
        self.received_any = False
        self.idle_since = 0.0
        self.on_close: Callable[[UpstreamConnection], None] | None = None
        self._paused = False
        self._finished = False

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._deadline.cancel()
        handler = self._handler
        if handler is not None:
            try:  # a close-delimited body ends with the connection
                self._h11.receive_data(b"")
                self._drain_events(handler)
            except h11.RemoteProtocolError:
                pass
            if not self._finished:
                self._handler = None
                handler.on_error(UpstreamError("provider closed the connection"))
        if self.on_close is not None:
            self.on_close(self)

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        if handler is None:  # bytes while idle: the connection is unusable
            self.close()
            return
        self.received_any = True
        self._deadline.touch()
        self._h11.receive_data(data)
        try:
            self._drain_events(handler)
        except h11.RemoteProtocolError:
            self._handler = None
            handler.on_error(UpstreamError("malformed response from provider"))
            self.close()

    def pause_writing(self) -> None:  # request bodies are small; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # ---- FlowControl (a slow client pauses us) -------------------------------------
    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()
            self._deadline.cancel()  # a stalled client is not a slow provider

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
            self._deadline.arm(self._read_timeout)

    # ---- exchange ------------------------------------------------------------------
    def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        handler: ResponseHandler,
    ) -> None:
        """Write the request and route the response to ``handler``."""
        self.used += 1
        self.received_any = False
        self._finished = False
        self._handler = handler
        conn = self._h11
        out = conn.send(h11.Request(method=method, target=target, headers=headers))
        out += conn.send(h11.Data(data=body)) if body else b""
        out += conn.send(h11.EndOfMessage())
        self._deadline.arm(self._read_timeout)
        self.transport.write(out)  # type: ignore[union-attr]

    def _drain_events(self, handler: ResponseHandler) -> None:
        conn = self._h11
        while True:
            event = conn.next_event()
            kind = type(event)
            if kind is h11.Data:
                handler.on_data(event.data)  # type: ignore[union-attr]
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return
            elif kind is h11.Response:
                handler.on_head(event.status_code, event.headers.raw_items())  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                self._finished = True
                self._handler = None
                self._deadline.cancel()
                self.idle_since = self._loop.time()
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                if reusable:
                    conn.start_next_cycle()
                else:
                    self.close()
                handler.on_end()
                return
            elif kind is h11.ConnectionClosed:
                return
            # InformationalResponse (1xx) needs nothing

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self._handler is None
            and self._h11.our_state is h11.IDLE
            and self._h11.their_state is h11.IDLE
        )

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        """Cancel the exchange now: the provider sees the connection reset."""
        self._handler = None
        self._deadline.cancel()
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def _on_timeout(self) -> None:
        handler, self._handler = self._handler, None
        self.abort()
        if handler is not None:
            handler.on_error(UpstreamTimeout("provider read timed out"))
