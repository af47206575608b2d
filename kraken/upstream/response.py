"""Incremental parser for provider responses (HTTP/1.1), built for long streams.

h11 costs ~20 µs of Python per chunk here (event objects, state machine, regexes), and a
stream has hundreds of chunks. This parser handles the one job a provider connection has
- a status line, headers, then a body - with byte scans, and hands ``on_data`` everything
one ``feed`` decoded in a single call, so chunks that arrive together leave in one write.

The head picks one body reader, once per response (``kraken.h1framing``: Content-Length,
chunked, or until the connection closes); ``feed`` then only forwards bytes to it. The
chunked reader is the one inbound requests use.

Strict where it matters for reuse: a malformed size line, a missing chunk CRLF or
conflicting framing headers raise ``ResponseError`` and the connection is discarded.
"""
from __future__ import annotations

from itertools import repeat
from typing import Callable, Protocol

from kraken.h1framing import NO_LIMIT, ChunkedBody, FixedBody, FramingError, UntilClose
from kraken.speedups import native, pick

MAX_HEAD = 64 * 1024
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_HTTP11_CODES = {b"HTTP/1.1 %03d" % code: code for code in range(1000)}
"""An HTTP/1.1 status line's first 12 bytes -> its code: one lookup for what ``_status``
checks (prefix, length, three digits); anything else (HTTP/1.0, a bad line) goes to it."""

ResponseError = FramingError
"""The provider sent something that is not valid HTTP/1.1."""


response_fields_c = native("response_fields")
"""kraken/csrc/response_head.c: what ``_fields`` answers for a section it accepts, None where
``_fields`` must decide (a refusal, a Content-Length past 18 digits); None where not built.
tests/upstream/test_response_fields.py compares them."""
_response_fields = pick(response_fields_c, None)
response_head_c = native("response_head")
"""kraken/csrc/response_head.c: for a read that begins with a whole head of a final response,
(head_end, status, headers, length, chunked, close) as ``response_head_py`` reads it; None
where the parser's own steps must decide (tests/upstream/test_response_fields.py compares
them). One call where ``_read_head`` and ``_head`` take ~140 bytecodes, two finds and three
slices: a provider's first read usually holds its whole head."""
_response_head = pick(response_head_c, None)


class BodySink(Protocol):
    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...


class _Finished:
    """The reader after the body: whatever follows is not part of this response."""

    __slots__ = ()

    def feed(self, data: bytes, out: list[bytes]) -> bytes:
        return data


_FINISHED = _Finished()
_UNTIL_CLOSE = UntilClose()
Reader = FixedBody | ChunkedBody | UntilClose | _Finished


class ResponseParser:
    """Parses exactly one response; ``keep_alive`` says whether the connection may be reused."""

    __slots__ = ("_sink", "_reader", "_head_buf", "keep_alive", "_no_body", "status", "_ended",
                 "on_data", "on_chunk", "_one")

    def __init__(self, sink: BodySink, no_body: bool = False):
        self._sink = sink
        self.on_data = sink.on_data
        """Where body bytes go: the sink's, or an owner's shortcut past it (one call per read)."""
        self.on_chunk: Callable[[bytes, bytes], None] | None = None
        """If set, where a read of whole chunks whose size lines are as Kraken writes them
        (``ChunkedBody.one``, ``ChunkedBody.whole``), none of them the last, goes instead of
        ``on_data``: their data and the read itself (their frames, which an HTTP/1.1 client
        can be sent as they are). Such a read never ends the body, so nothing else follows it
        in the same ``feed``. (Other reads go to ``on_data``.)"""
        self._reader: Reader | None = None
        """The body's reader, chosen by the head; None while the head is still arriving."""
        self._head_buf = b""
        self._one = None
        """A chunked body's ``ChunkedBody.one``: a one-chunk read skips the reader's list."""
        self._no_body = no_body
        self.keep_alive = True
        self.status = 0
        self._ended = False

    @property
    def done(self) -> bool:
        return self._reader is _FINISHED

    def feed(self, data: bytes) -> None:
        one = self._one
        if one is None:
            reader = self._reader
            if reader is None:
                data = self._read_head(data)
                reader = self._reader
                if reader is None:
                    return  # the head is still incomplete
                one = self._one
                if not data and one is not None:
                    return  # a head alone before a chunked body (a provider's usual first read)
            if one is None:  # not chunked
                out: list[bytes] = []
                rest = reader.feed(data, out)
                self._deliver(out, rest)
                return
        # chunked: ``one`` takes a one-chunk read, ``whole`` whole chunks, feed_all the rest
        body = one(data)
        if body is not None:
            on_chunk = self.on_chunk
            if on_chunk is None:
                self.on_data(body)
            else:
                on_chunk(body, data)  # one chunk, its size line plain: its frame as received
            return
        chunked: ChunkedBody = self._reader  # type: ignore[assignment]
        many = chunked.whole(data)
        if many is None:
            out = []
            self._deliver(out, chunked.feed_all(data, out))
        elif many[1]:  # ends the body: on_data, whose writes leave with the response's end
            self.on_data(many[0])
            self._finish(b"")
        elif self.on_chunk is None:
            self.on_data(many[0])
        else:  # all plain: the read is their frames as Kraken would write them
            self.on_chunk(many[0], data)

    def _deliver(self, out: list[bytes], rest: bytes | None) -> None:
        """What a reader's ``feed`` decoded goes to ``on_data`` in one call; ``rest`` not None:
        the body is complete."""
        if out:
            self.on_data(out[0] if len(out) == 1 else b"".join(out))
        if rest is not None:
            self._finish(rest)

    def feed_eof(self) -> None:
        """The provider closed the connection: fine only for a close-delimited body."""
        if self._reader is _UNTIL_CLOSE:
            self.keep_alive = False
            self._finish(b"")
        elif self._reader is not _FINISHED:
            raise ResponseError("provider closed the connection mid-response")

    def _finish(self, rest: bytes) -> None:
        """The body is complete; ``rest`` is what followed it in the same read."""
        self._reader = _FINISHED
        self._one = None
        if rest:  # bytes after a complete response: the connection is out of step
            self.keep_alive = False
        if not self._ended:
            self._ended = True
            self._sink.on_end()

    def _read_head(self, data: bytes) -> bytes:
        """Parse heads (interim 1xx ones are skipped) until one picks a body reader; returns
        the bytes after it. An incomplete head is kept for the next ``feed``."""
        if not self._head_buf and _response_head is not None:
            head = _response_head(data)  # a whole final head, read as _head reads it
            if head is not None:
                end, status, headers, length, chunked, close = head
                if close:
                    self.keep_alive = False
                self._begin(status, headers, length, chunked)
                return data[end:]
        buf = self._head_buf + data if self._head_buf else data
        pos = 0
        while self._reader is None:
            head_end = buf.find(b"\r\n\r\n", pos)
            if head_end < 0:
                if len(buf) - pos > MAX_HEAD:
                    raise ResponseError("response head too large")
                self._head_buf = buf[pos:]
                return b""
            self._head(buf[pos:head_end])
            pos = head_end + 4
        self._head_buf = b""
        return buf[pos:]

    def _head(self, head: bytes) -> None:
        eol = head.find(b"\r\n")
        status = _HTTP11_CODES.get(head[:12])
        if status is None:
            status = self._status(head if eol < 0 else head[:eol])
        if eol < 0:
            headers, length, chunked = [], None, False
        else:
            section = head[eol + 2:]
            fields = None if _response_fields is None else _response_fields(section)
            headers, length, chunked, close = self._fields(section) if fields is None else fields
            if close:
                self.keep_alive = False
        if 100 <= status < 200:
            return  # interim response: the real head follows
        self._begin(status, headers, length, chunked)

    def _begin(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None,
               chunked: bool) -> None:
        """A final head: hand it to the sink and pick the body's reader."""
        if chunked and length is not None:
            raise ResponseError("both Content-Length and chunked")
        self.status = status
        self._sink.on_head(status, headers)
        if self._no_body or status in (204, 304):
            self._reader = FixedBody(0)
        elif chunked:
            self._reader = reader = ChunkedBody(NO_LIMIT, MAX_HEAD)
            self._one = reader.one
        elif length is not None:
            self._reader = FixedBody(length)
        else:
            self.keep_alive = False
            self._reader = _UNTIL_CLOSE

    def _status(self, status_line: bytes) -> int:
        if not status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or len(status_line) < 12:
            raise ResponseError("bad status line")
        code = status_line[9:12]
        if not code.isdigit():
            raise ResponseError("bad status code")
        if status_line.startswith(b"HTTP/1.0"):
            self.keep_alive = False
        return int(code)

    @staticmethod
    def _fields(section: bytes) -> tuple[list[tuple[bytes, bytes]], int | None, bool, bool]:
        """The header fields (name lower-cased, value stripped), the Content-Length (None if
        absent), whether the body is chunked and whether ``Connection`` says ``close``: what
        ``response_fields_c`` answers, where it answers. ``section``: the
        field lines (CRLF-separated). A line with no colon, an empty name or whitespace around
        it, or a bare CR or LF anywhere is refused. The checks run over the whole section or in one
        comprehension, where a loop of them per line cost ~0.55 us a field (providers send 10-30)."""
        lines = section.split(b"\r\n")
        crlfs = len(lines) - 1
        if section.count(b"\n") != crlfs or section.count(b"\r") != crlfs:
            raise ResponseError("bad header line")  # a bare CR or LF
        headers = [(name.lower(), value.strip()) for name, sep, value in
                   map(bytes.partition, lines, repeat(b":")) if sep and name and name == name.strip()]
        if len(headers) != len(lines):
            raise ResponseError("bad header line")  # no colon, or no name, or space around it
        length: int | None = None
        chunked = close = False
        for name, value in headers:
            if name not in _FRAMING:
                continue
            if name == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise ResponseError("bad Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise ResponseError("unsupported Transfer-Encoding")
                chunked = True
            elif b"close" in value.lower():  # connection
                close = True
        return headers, length, chunked, close


def response_head_py(data: bytes) -> tuple | None:
    """What ``response_head_c`` answers, defined with the parser's own steps: for a read that
    begins with a whole head of a final response (status 200-999, HTTP/1.1), (the index after
    its blank line, status, headers, length, chunked, close); else None. (The C reader also
    answers None where ``_fields`` reads a Content-Length past 18 digits.)"""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    status = _HTTP11_CODES.get(head[:12])
    if status is None or status < 200:
        return None
    eol = head.find(b"\r\n")
    if eol < 0:
        return end + 4, status, [], None, False, False
    try:
        fields = ResponseParser._fields(head[eol + 2:])
    except ResponseError:
        return None
    return (end + 4, status, *fields)
