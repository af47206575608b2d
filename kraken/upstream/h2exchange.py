"""One provider call on a shared outbound HTTP/2 connection (``h2client``).

``H2Exchange`` is to ``H2UpstreamConnection`` what ``http/h2stream.H2Stream`` is to the
inbound connection: the per-request object beside the connection. It is shaped like
``UpstreamConnection`` (``send``, ``pause_reading``/``resume_reading``, ``abort``, ``used``,
``received_any``), so the relay drives either protocol unchanged; ``OriginPool.acquire``
hands exchanges out and ``OriginPool.release`` gives their stream slot back.

    READY ──send──▶ OPEN ──END_STREAM──▶ DONE
    OPEN ──RST_STREAM from the provider / GOAWAY above its last id / read timeout /
           connection lost──▶ FAILED (``on_error``)
    READY | OPEN ──abort()──▶ CANCELLED (RST_STREAM CANCEL on this stream only)
    DONE with the request body unfinished (an early answer) ──release──▶ RST_STREAM CANCEL
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from kraken.errors import UpstreamTimeout
from kraken.timers import Deadline

if TYPE_CHECKING:
    from kraken.upstream.connection import ResponseHandler
    from kraken.upstream.h2client import H2UpstreamConnection

READY, OPEN, DONE, FAILED, CANCELLED = "ready", "open", "done", "failed", "cancelled"


class H2Exchange:
    """One request/response on a shared HTTP/2 connection (the pool's unit of acquire)."""

    __slots__ = ("connection", "stream_id", "state", "used", "received_any", "handler",
                 "paused", "owed", "body", "deadline", "more", "drained", "failure")

    def __init__(self, connection: H2UpstreamConnection):
        self.connection = connection
        self.stream_id = 0
        self.state = READY
        self.used = 0
        """Streams started on the connection, this one included (>= 2 once refused unprocessed)."""
        self.received_any = False
        self.handler: ResponseHandler | None = None
        self.paused = False
        self.owed = 0
        """Flow-controlled bytes received while paused: the stream window still owed."""
        self.body = b""
        """Request body bytes still waiting for the provider's window."""
        self.deadline = Deadline(connection.loop, self._on_timeout)
        self.more = False
        """The request body is still streaming (``send_more``/``end_body``)."""
        self.drained: asyncio.Future | None = None
        """Resolved once ``body`` has all gone out (an upload waits on it)."""
        self.failure: Exception | None = None
        """How the exchange failed before ``expect`` named its handler (``send`` can fail at once)."""

    # ---- the UpstreamConnection interface used by the gateway ----------------------
    def send(self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes,
             handler: ResponseHandler | None = None, more: bool = False) -> None:
        """Open the stream and send the request; its response goes to ``handler``, or to the
        one ``expect`` names next. ``more``: the body continues through ``send_more``/``end_body``."""
        self.handler = handler
        self.more = more
        self.connection.start(self, method, target, headers, body)

    def expect(self, handler: ResponseHandler) -> None:
        """Route the response to ``handler`` (``UpstreamConnection.expect``); a failure that
        came while there was none (the connection was closing) reaches it now."""
        failure, self.failure = self.failure, None
        if failure is not None:
            handler.on_error(failure)
        else:
            self.handler = handler

    def send_more(self, data: bytes) -> None:
        if data and self.state is OPEN:
            self.body += data
            self.deadline.touch()
            self.connection.send_body(self)

    def end_body(self) -> None:
        """END_STREAM after the body; once answered (DONE) it stays unsent and ``more`` set:
        ``release`` resets the stream then, rather than finish a body no one reads."""
        if self.more and self.state is OPEN:
            self.more = False
            self.connection.send_body(self)

    async def writable(self) -> None:
        """Returns once what was given has gone out within the provider's windows."""
        while self.body and self.state is OPEN:
            if self.drained is None or self.drained.done():
                self.drained = asyncio.get_running_loop().create_future()
            await self.drained

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
    def _wake(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _end(self) -> None:
        self._wake()
        self.state = DONE
        self.deadline.stop()
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_end()

    def _fail(self, exc: Exception, *, refused: bool = False) -> None:
        self._wake()
        self.state = FAILED
        self.deadline.stop()
        if refused and not self.received_any:
            self.used = max(self.used, 2)
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.on_error(exc)
        else:
            self.failure = exc  # before ``expect`` (or after ``abort``, then never read)

    def _on_timeout(self) -> None:
        if self.state is OPEN:
            conn = self.connection
            conn.reset(self, ErrorCodes.CANCEL)
            conn.check_alive()
            self._fail(UpstreamTimeout("provider read timed out"))
