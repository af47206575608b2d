"""One HTTP/1.1 keep-alive connection to a provider.

The connection runs one exchange at a time and pushes what it parses into a
``ResponseHandler`` from inside ``data_received``: no task hop per chunk, so a provider's
bytes reach the client in the same loop iteration they arrive in. Requests are serialised
here (their headers are built by Kraken, never copied from a client); responses are parsed
by ``response.ResponseParser``, which costs a fraction of h11 per chunk.

A long stream's usual read (one whole chunk of whole SSE events, no usage object) can skip
the parser and the handler: once the handler has ``pipe``d the connection to its client's
socket, each read that passes ``plain_sse_chunk`` is written there as it came, in the same
callback; the first read that does not goes the usual way and ends the pipe. Where the C
extension was built, that callback is ``kraken._speedups.PipeProtocol`` (kraken/csrc/pipe.c):
the transport's protocol for the connection's life, it writes a plain read with no Python
frame at all and hands everything else to this connection as it came. It notes the loop time
of each read it takes in itself (``last_read``), not in the read deadline: when the deadline
fires, ``_on_timeout`` counts from that read.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Protocol

from kraken.errors import UpstreamError, UpstreamTimeout
from kraken.plainchunk import plain_sse_chunk
from kraken.speedups import native, pick
from kraken.timers import Deadline
from kraken.upstream.response import ResponseError, ResponseParser


PipeProtocol = pick(native("PipeProtocol"), None)
"""The pipe in C, or None: the Python pipe in ``data_received`` serves."""


class ResponseHandler(Protocol):
    """Receives one upstream response. Called from the event loop, never concurrently."""

    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...

    def on_error(self, exc: Exception) -> None: ...

    def on_read_end(self) -> None:
        """Everything one socket read carried has been delivered (flush point)."""

    # Optional: ``on_chunk(data, frame)`` takes, instead of ``on_data``, a read of whole chunks
    # whose size lines are as Kraken writes them (one, or several read together), with the read
    # as their frames (``ResponseParser.on_chunk``); such a read never ends the response.
    # Optional: ``bind_pipe(connection)`` is called at ``expect``; the handler may then call
    # ``connection.pipe(write)`` while the parser is at a chunk boundary (``Relay.on_chunk``).


class UpstreamConnection(asyncio.Protocol):
    """Client side of one TCP (or TLS) connection; ``send`` starts an exchange."""

    def __init__(self, origin: str, read_timeout_s: float,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.origin = origin
        # The pool passes its loop: asking asyncio costs a getpid syscall per connection.
        self._loop = loop = loop if loop is not None else asyncio.get_event_loop()
        self._read_timeout = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._handler: ResponseHandler | None = None
        self._deadline = Deadline(loop, self._on_timeout)
        self.closed = False
        self.used = 0
        """Exchanges started on this connection (a reused one may have gone stale)."""
        self.received_any = False
        self.idle_since = 0.0
        """Loop time the connection opened or its last response ended (the pool reaps by it)."""
        self.on_close: Callable[[UpstreamConnection], None] | None = None
        self._paused = False
        self._pipe: Callable[[bytes], object] | None = None
        """Where a plain read goes as it came, past the parser and the handler (``pipe``)."""
        self._piped = 0
        """Reads the pipe took since ``pipe`` (``unpipe`` hands the count to the handler)."""
        self._native: PipeProtocol | None = None  # type: ignore[valid-type]
        """The transport's protocol when the pipe is in C: it pipes while its ``write`` is set."""
        self._no_body = False
        """The request in flight is a HEAD: its response has no body (``expect``)."""
        self._chunked_upload = False
        """The request body streams after ``send`` (``send_more``) in chunked framing."""
        self._uploading = False
        """The request's body is still to be ended (``end_body``): the provider reads it yet."""
        self._writable: asyncio.Future | None = None
        """Set while the transport's write buffer is full (``pause_writing``)."""

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.idle_since = self._loop.time()  # idle from the start (then from each on_end)
        if PipeProtocol is not None:  # before the transport reads: set once, costs nothing more
            self._native = PipeProtocol(self, self._loop.time)
            transport.set_protocol(self._native)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.resume_writing()  # a waiting upload sees ``closed``
        self._deadline.close()
        handler, parser = self._handler, self._parser
        if handler is not None and parser is not None:
            try:  # a close-delimited body ends with the connection
                parser.feed_eof()
            except ResponseError:
                self._handler = None
                handler.on_error(UpstreamError("provider closed the connection"))
        if self.on_close is not None:
            self.on_close(self)
        # Let go of what would keep a closed connection alive in reference cycles until a
        # full gc run (the transport holds this protocol; the deadline, its bound method; the
        # last exchange's handler, parser and pipe): freed at once instead.
        self.transport = None
        self._handler = self._parser = self._pipe = self._native = None

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        if handler is None:  # bytes while idle: the connection is unusable
            self.close()
            return
        self._deadline.last = self._loop.time()  # Deadline.touch(), inline: this runs per read
        pipe = self._pipe
        if pipe is not None:  # (only ever after a read the parser took: received_any is set)
            if plain_sse_chunk(data):
                try:
                    pipe(data)
                except RuntimeError:  # the client's transport closed under the pipe: the
                    self._pipe = None  # usual way drops the read (its exchange is shut)
                else:
                    self._piped += 1
                    return
            self._pipe = None  # the parser takes this read; the handler may pipe again
        self.received_any = True
        try:
            self._parser.feed(data)  # type: ignore[union-attr]
            handler.on_read_end()
        except ResponseError:
            self._handler = None
            handler.on_error(UpstreamError("malformed response from provider"))
            self.close()

    def pause_writing(self) -> None:  # only a streamed request body (an upload) waits on it
        if self._writable is None:
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- FlowControl (a slow client pauses us) -------------------------------------
    def pause_reading(self) -> None:
        # No response in flight (its end was handled, the client's last write paused us):
        # nothing to pace, and a pause now would outlive the exchange, into the pool.
        if self._handler is None:
            return
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
        handler: ResponseHandler | None = None,
        more: bool = False,
    ) -> None:
        """Write the request; its response goes to ``handler``, or to the one ``expect`` names
        before the loop runs again (the relay is built while the provider already works).
        ``more``: ``body`` is only the start of the request body, the rest follows through
        ``send_more``/``end_body`` (chunked when the headers say so, else within their
        Content-Length)."""
        self.used += 1
        self.received_any = False
        self._no_body = method == "HEAD"
        self._uploading = more
        self._chunked_upload = more and (b"transfer-encoding", b"chunked") in headers
        if self._chunked_upload and body:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        data = request_bytes(method, target, headers, body)
        self.transport.write(  # type: ignore[union-attr]
            data if data is not None else request_bytes_py(method, target, headers, body))
        self._deadline.arm(self._read_timeout)
        if handler is not None:
            self.expect(handler)

    def expect(self, handler: ResponseHandler) -> None:
        """Route the response of the request just ``send``-ed to ``handler``. Called in the
        same loop iteration as ``send``: no read can come between them."""
        self._handler = handler
        self._parser = parser = ResponseParser(self, self._no_body)  # positional: see Gateway.relay
        parser.on_data = handler.on_data  # straight to the handler: one call less per read
        parser.on_chunk = getattr(handler, "on_chunk", None)  # optional (ResponseHandler)
        self.unpipe()  # the last exchange's pipe and count do not carry over
        bind_pipe = getattr(handler, "bind_pipe", None)  # optional (ResponseHandler)
        if bind_pipe is not None:
            bind_pipe(self)

    # ---- the pipe: a stream's plain reads straight to the client (``Relay.on_chunk``) -
    def pipe(self, write: Callable[[bytes], object]) -> None:
        """From the next read on, write each read that passes ``plain_sse_chunk`` to ``write``
        as it came, unparsed: only while the parser is at a chunk boundary and the handler's
        tap at an event boundary, so such a read changes neither."""
        if self._native is not None:
            self._native.write = write
        else:
            self._pipe = write

    def unpipe(self) -> int:
        """End the pipe; the reads it took since ``pipe`` (or the last ``unpipe``)."""
        self._stop_pipe()
        piped, self._piped = self._piped, 0
        return piped + (self._native.take() if self._native is not None else 0)

    def _stop_pipe(self) -> None:
        self._pipe = None
        if self._native is not None:
            self._native.write = None

    # ---- a streamed request body (``send(..., more=True)``) ------------------------
    def send_more(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self._deadline.touch()  # the provider reads the body before it answers
            self.transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked_upload
                                 else data)

    def end_body(self) -> None:
        self._uploading = False
        if self._chunked_upload and self.transport is not None and not self.closed:
            self.transport.write(b"0\r\n\r\n")

    async def writable(self) -> None:
        """Returns once the provider's socket takes more (at once unless its buffer is full)."""
        while self._writable is not None and not self.closed:
            await asyncio.shield(self._writable)

    # ---- BodySink: the parser's callbacks, forwarded to the exchange's handler -----
    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self._handler is not None:
            self._handler.on_head(status, headers)

    def on_data(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.on_data(data)

    def on_end(self) -> None:
        handler, self._handler = self._handler, None
        self._stop_pipe()
        if self._paused:  # paused by a write of this last read: idle, it must read again
            self._paused = False
            if not self.closed:
                self.transport.resume_reading()  # type: ignore[union-attr]
        self._deadline.cancel()
        self.idle_since = self._loop.time()
        if not self._parser.keep_alive:  # type: ignore[union-attr]
            self.close()
        self._parser = None
        if handler is not None:
            handler.on_end()

    @property
    def reusable(self) -> bool:
        """The exchange is over both ways: an answer that came before the request's body
        ended (an early 200) leaves the provider reading that body; the next request's
        bytes would be read as its rest."""
        return (not self.closed and self._handler is None and self._parser is None
                and not self._uploading)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        """Cancel the exchange now: the provider sees the connection reset."""
        self._handler = None
        self._stop_pipe()
        if self._parser is not None:  # a read being parsed delivers nothing more
            self._parser.on_data = _drop
            self._parser.on_chunk = None
        self._deadline.cancel()
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def _on_timeout(self) -> None:
        if self._piped_lately():
            return
        handler, self._handler = self._handler, None
        self.abort()
        if handler is not None:
            handler.on_error(UpstreamTimeout("provider read timed out"))

    def _piped_lately(self) -> bool:
        """Whether the C pipe took a read less than the read timeout ago: then the deadline
        fired counting from an older read, and is set again to fire a read timeout after the
        pipe's last (the pipe notes its reads' times in itself, where each read touches memory
        anyway; stamping the deadline per read cost two cold cache lines in a relay of many
        streams)."""
        native, deadline = self._native, self._deadline
        if native is None or (last := native.last_read) <= deadline.last:
            return False
        remaining = last + self._read_timeout - self._loop.time()
        if remaining <= 0:
            return False
        deadline.arm(remaining)  # due at last + read timeout; then counted from that read
        deadline.last, deadline.timeout = last, self._read_timeout
        return True


_FIELD_JOIN = b": ".join
"""A header field's line from its (name, value) pair (mapped in C: no comprehension frame)."""


def request_bytes_py(method: str, target: str, headers, body: bytes) -> bytes:
    """A request as it goes to the provider: its line, its fields, a blank line, ``body``.
    One join over the lines (an empty one ends the head): 0.6 us where a %-format per field,
    a join and a concatenation cost 1.0 us, and the body is copied once, not twice."""
    return b"\r\n".join([b"%s %s HTTP/1.1" % (method.encode(), target.encode()),
                         *map(_FIELD_JOIN, headers), b"", body])


request_bytes_c = native("request_bytes")
"""The C version (kraken/csrc/request_bytes.c), or None where it was not built. It answers
None for a field that is not a (bytes, bytes) tuple, or a body that is not bytes, which
``request_bytes_py`` then writes."""
request_bytes = pick(request_bytes_c, request_bytes_py)


def _drop(data: bytes) -> None:
    """The ``on_data`` of a parser whose exchange was cancelled."""
