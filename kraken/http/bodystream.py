"""A request body handed to the handler while it is still arriving (uploads), with no I/O.

Most bodies are small and collected whole before the handler runs. A ``multipart/form-data``
body (audio, file uploads: up to hundreds of MB) is instead streamed: the transport starts the
handler at the end of the head and feeds the body here as it arrives; the handler ``read``\\ s it
in the order received. What is held is bounded by ``high``: past it the transport is told to
``pause`` (HTTP/1.1 stops reading the socket; HTTP/2 stops handing back flow-control window),
and to ``resume`` once the reader took it below ``high // 4``. ``consumed`` is told every byte
the reader took, and every byte no reader will ever take (dropped on ``fail`` or ``discard``,
or arriving after): HTTP/2 hands them back as window, which its connection's streams share.

    RECEIVING ──finish──▶ COMPLETE (read drains, then b"")
    RECEIVING ──fail──▶ FAILED (read raises what the transport saw: reset, timeout, malformed)
    RECEIVING | COMPLETE with bytes unread ──discard──▶ FAILED (the HTTP/2 stream closed)
"""
from __future__ import annotations

import asyncio
import collections
from typing import Callable

__all__ = ["BodyStream", "STREAMED_CONTENT_TYPE", "streams_body"]

STREAMED_CONTENT_TYPE = b"multipart/form-data"
HIGH = 256 * 1024
"""Bytes held before the transport pauses the client (a few provider writes' worth)."""


def streams_body(method: bytes | str, content_type: bytes | None) -> bool:
    """Whether a request's body goes to the handler as it arrives (uploads) rather than whole."""
    if method not in (b"POST", "POST") or content_type is None:
        return False
    return content_type[:19].lower() == STREAMED_CONTENT_TYPE


class BodyStream:
    """One streamed request body between a transport (``feed``) and the handler (``read``)."""

    __slots__ = ("_chunks", "_held", "_waiter", "_state", "_error", "_pause", "_resume",
                 "_consumed", "_paused", "high", "declared", "received")

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None],
                 consumed: Callable[[int], None] | None = None, *, declared: int | None = None,
                 high: int = HIGH):
        self._chunks: collections.deque[bytes] = collections.deque()
        self._held = 0
        self._waiter: asyncio.Future | None = None
        self._state = "receiving"
        self._error: Exception | None = None
        self._pause, self._resume, self._consumed = pause, resume, consumed
        self._paused = False
        self.high = high
        self.declared = declared
        """The body's Content-Length, if the client sent one."""
        self.received = 0

    # ---- the transport's side ------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._state != "receiving" or not data:
            if self._state == "failed" and data and self._consumed is not None:
                self._consumed(len(data))  # never read: its window is not lost
            return
        self._chunks.append(data)
        self._held += len(data)
        self.received += len(data)
        if self._held > self.high and not self._paused:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        if self._state == "receiving":
            self._state = "complete"
            self._wake()

    def fail(self, exc: Exception) -> None:
        """The body broke: the reader gets ``exc``; what it had not read is let go."""
        if self._state == "receiving":
            self._break(exc)

    def discard(self, exc: Exception) -> None:
        """The transport is done with the body (its HTTP/2 stream closed): what is unread is
        let go even if the body had all arrived; a reader that had not read it all gets
        ``exc``."""
        if self._state == "receiving" or self._chunks:
            self._break(exc)

    def _break(self, exc: Exception) -> None:
        """Fail with ``exc``; the bytes let go are told to ``consumed`` (an HTTP/2
        connection's window would shrink by them for good)."""
        self._state, self._error = "failed", exc
        self._chunks.clear()
        held, self._held = self._held, 0
        if held and self._consumed is not None:
            self._consumed(held)
        self._wake()

    @property
    def complete(self) -> bool:
        return self._state == "complete" and not self._chunks

    # ---- the handler's side --------------------------------------------------------
    async def read(self) -> bytes:
        """The next bytes of the body as received, b"" at its end; raises if it broke."""
        while not self._chunks:
            if self._state == "complete":
                return b""
            if self._state == "failed":
                raise self._error  # type: ignore[misc]
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self._held -= len(data)
        if self._consumed is not None:
            self._consumed(len(data))
        if self._paused and self._held <= self.high // 4:
            self._paused = False
            self._resume()
        return data

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
