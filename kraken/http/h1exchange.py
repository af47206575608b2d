"""One request on an HTTP/1.1 connection: its body as it arrives, then the ``ResponseSink``
the handler writes its response to (like uvicorn's ``RequestResponseCycle``, or ``H2Stream``).

The connection (``h1.H1Connection``) owns the socket, the head parser, keep-alive and
pipelining, and makes a fresh exchange per request, so a handler that is still running after
its response ended can never write into the next one.

Responses are framed here: sending a body chunk through ``h11.Connection.send`` costs ~7 µs
against ~0.6 µs for formatting the chunk (DECISIONS.md), and a stream has hundreds. A write
is one format (chunked) and one ``transport.write``, or one list append while corked; a
provider's chunk whose frame is already the one Kraken would write goes out as it is
(``write_frame``), or straight from the provider's socket callback (``pipe_target``).

    receiving ──body complete──▶ responding ──end──▶ closed (the connection reads the next head)
    any ──the connection closes, aborts or is lost──▶ closed
"""
from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Callable

import h11

from kraken.http.date import DATE
from kraken.http.bodystream import BodyStream
from kraken.http.exchange import FlowControl, Request
from kraken.http.h1body import BodyPace, ChunkedBody, FixedBody
from kraken.http.h1head import target_path

if TYPE_CHECKING:
    from kraken.http.h1 import H1Connection

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase) for code, phrase in _REASONS.items()}
"""Each known status's line, formatted once rather than per response."""
_AS_STR = {b"GET": "GET", b"POST": "POST", b"HEAD": "HEAD", b"PUT": "PUT", b"DELETE": "DELETE",
           b"OPTIONS": "OPTIONS", b"PATCH": "PATCH", b"1.1": "1.1", b"1.0": "1.0"}
"""The usual methods and versions as ``Request`` carries them, not decoded per request."""
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_FIELD_JOIN = b": ".join
_CHUNKED_FIELD = b"transfer-encoding: chunked\r\n"


class H1Exchange:
    """One request/response exchange; the ``ResponseSink`` given to the handler."""

    __slots__ = (
        "_conn", "_transport", "head", "headers", "head_ns", "reader", "body", "body_size", "pace",
        "expect_continue", "keep_alive", "http11", "_head_only", "_started", "_chunked",
        "_mute", "_corked", "_pending", "_held_head", "_producer", "closed", "stream", "_on_shut",
    )

    def __init__(self, conn: H1Connection, head: h11.Request | None = None,
                 reader: FixedBody | ChunkedBody | None = None,
                 headers: tuple[tuple[bytes, bytes], ...] = (), keep_alive: bool = False,
                 http11: bool = True, head_ns: int = 0):
        self._conn = conn
        self._transport = conn.transport
        self.head = head
        """The parsed request head (None for the connection's own error answers)."""
        self.headers = headers
        """The head's (lower-case name, value) pairs (``h1head.header_pairs``)."""
        self.head_ns = head_ns
        self.reader = reader
        """Frames the request body; None once it is complete or refused."""
        self.body: list[bytes] = []
        self.body_size = 0
        self.stream: BodyStream | None = None
        """An upload's body, fed to the handler as it arrives (``kraken.http.bodystream``)."""
        self.pace: BodyPace | None = None
        self.expect_continue = False
        self.keep_alive = keep_alive
        """The connection may carry another request after this one."""
        self.http11 = http11
        self._head_only = head is not None and head.method == b"HEAD"
        self._started = False
        self._chunked = False
        self._mute = False
        """No more body bytes may be written: a HEAD response, or the exchange is closed."""
        self._corked = False
        self._pending: list[bytes] = []
        """Writes held while corked: at most what one provider read delivered."""
        self._held_head = False
        """The response head is in ``_pending``: nothing of the response was written yet."""
        self._producer: FlowControl | None = None
        self._on_shut: Callable[[], None] | None = None
        """Called once if the connection shuts while a pipe writes here (``pipe_target``)."""
        self.closed = False
        """Nothing more may be sent: the response ended, or the connection is closing."""

    # ---- the request, for H1Connection ---------------------------------------------
    def receive(self, data: bytes) -> bytes | None:
        """Feed body bytes; once the body is complete, the bytes after it (the next
        pipelined request), else None. Raises ``BodyRejected``."""
        body = self.body
        before = len(body)
        rest = self.reader.feed(data, body)  # type: ignore[union-attr]
        added = len(body) - before
        if added:
            self.expect_continue = False
            size = len(body[-1]) if added == 1 else sum(map(len, body[before:]))
            self.body_size += size
            if self.pace is not None:
                self.pace.add(size)
        return rest

    def stop_receiving(self) -> None:
        """Forget the request body being received (complete, refused or abandoned)."""
        self.reader = None
        if self.pace is not None:
            self.pace.stop()
            self.pace = None

    @property
    def path(self) -> str | None:
        """The request's path (``Request.path``); None for the connection's own answers."""
        return None if self.head is None else target_path(self.head.target)

    def request(self, peer: str) -> Request:
        """The complete request, for the handler; the body list is let go."""
        head = self.head
        assert head is not None
        method, version = head.method, head.http_version
        body = self.body
        request = Request(_AS_STR.get(method) or method.decode("ascii", "replace"),
                          head.target.decode("ascii", "replace"), self.headers,
                          b"".join(body), peer, self.head_ns, "http",
                          _AS_STR.get(version) or version.decode(), self.stream)
        body.clear()
        return request

    def shut(self) -> None:
        """The connection is closing, aborting or gone: drop whatever is held."""
        self.closed = True
        self._mute = True
        self._producer = None
        self._corked = False
        self._pending = []
        self.stop_receiving()
        on_shut, self._on_shut = self._on_shut, None
        if on_shut is not None:
            on_shut()  # the pipe ends before another byte could reach a shut connection

    @property
    def producer(self) -> FlowControl | None:
        return self._producer

    # ---- ResponseSink --------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    @property
    def disconnected(self) -> bool:
        return self._conn.disconnected

    @property
    def unfinished(self) -> bool:
        return not self.closed

    def set_producer(self, producer: FlowControl | None) -> None:
        if self.closed:
            return
        self._producer = producer
        if producer is not None and self._conn.writing_paused:
            producer.pause_reading()

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        if self._started or self.closed:
            return  # a second start, or the connection is closing: nothing may be sent
        head = self._head(status, headers, length)
        if self._corked:
            self._pending.append(head)
            self._held_head = True
        else:
            self._transport.write(head)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        if self._mute or not data:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._corked:
            self._pending.append(data)
        else:
            self._transport.write(data)  # type: ignore[union-attr]

    def write_frame(self, frame: bytes, data: bytes) -> None:
        """``write(data)`` where ``frame`` is already ``data``'s chunk as ``write`` would frame
        it (a provider's chunk relayed as received, ``ChunkedBody.plain``): sent as it is."""
        if self._mute:
            return
        if not self._chunked:
            frame = data
        if self._corked:
            self._pending.append(frame)
        else:
            self._transport.write(frame)  # type: ignore[union-attr]

    def pipe_target(self, on_shut: Callable[[], None]) -> Callable[[bytes], object] | None:
        """The socket's own write, for a provider's chunk frames to go to as they are
        (``UpstreamConnection.pipe``), while the body is chunked, open and nothing is held;
        ``on_shut`` ends that pipe if the connection shuts first. Else None."""
        if not self._chunked or self._mute or self._corked:
            return None
        self._on_shut = on_shut
        return self._transport.write  # type: ignore[union-attr]

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """``start`` + ``write`` + ``end`` with the head and body in one transport write."""
        if self.closed:
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
                self._transport.write(data)  # type: ignore[union-attr]
        self.end()

    def cork(self) -> None:
        """Hold writes until ``flush``/``end``: bytes that arrived together leave in one
        syscall (a relay corks within one provider read, so nothing waits longer than that)."""
        self._corked = True

    def flush(self) -> None:
        """Write what was held, and write at once again until the next ``cork``."""
        self._corked = False
        if self._pending:
            pending, self._pending = self._pending, []
            self._held_head = False
            if not self.closed:
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))  # type: ignore[union-attr]

    def send_held(self) -> None:
        """Write what is held now if the head is in it and the body is chunked: a relay that
        got a whole answer in one read lets the client read it while the record is made, and
        ``end``'s last chunk, written after the record, is what completes the response
        (ARCHITECTURE rule 5). A Content-Length or HTTP/1.0 body is complete with its last
        byte, and a head already sent would make this a write of its own: both wait for ``end``."""
        if self._held_head and self._chunked:
            self.flush()

    def end(self) -> None:
        if self.closed or not self._started:
            return
        if self._chunked and not self._mute:
            self._pending.append(_LAST_CHUNK)
        self._corked = False
        self.flush()
        self._producer = self._on_shut = None
        self._mute = True
        self.closed = True
        self._conn.response_ended(self)

    def abort(self) -> None:
        """Cut the connection: the client sees a truncated response."""
        if not self.closed:
            self._conn.abort()

    # ---- helpers -------------------------------------------------------------------
    def _head(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> bytes:
        """The status line and header section; decides the body's framing. The fields are
        joined in C (``b": ".join`` per pair, then the lines), not formatted one by one."""
        self._started = True
        self._mute = self._head_only
        conn = self._conn
        if conn.draining or self.reader is not None:
            # Draining, or answered before the request body ended (an upload refused or answered
            # early): the connection closes after this response, and the head must say so, or
            # a client may reuse it (RFC 9112 9.6; H1Connection.response_ended closes it).
            self.keep_alive = False
        if status == 204 or status == 304:
            # No body and no framing (RFC 9110 8.6, 9112 6.3): a provider's 204 relayed with
            # chunked framing sent a last chunk the client reads as the next response's start.
            self._chunked = False
            self._mute = True
            framing = b""
        elif length is not None:
            self._chunked = False
            framing = b"content-length: %d\r\n" % length
        elif self.http11:
            # chunked even when closing: a cut stream must look cut, not complete
            self._chunked = chunked = not self._head_only
            framing = _CHUNKED_FIELD if chunked else b""
        else:
            self._chunked = False  # HTTP/1.0: the body ends with the connection
            framing = b""
        fields = _CRLF.join(map(_FIELD_JOIN, headers))  # b"" only if there are none
        return b"".join((
            _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, DATE.line(),
            conn.always, fields, _CRLF if fields else b"", framing,
            b"\r\n" if self.keep_alive else b"connection: close\r\n\r\n"))


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``name: value`` lines for a response head (a connection's ``always`` headers)."""
    return b"".join([b"%s: %s\r\n" % h for h in headers])
