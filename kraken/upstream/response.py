"""Incremental parser for provider responses (HTTP/1.1), built for long streams.

h11 costs ~20 µs of Python per chunk here (event objects, state machine, regexes), and a
stream has hundreds of chunks. This parser handles the one job a provider connection has
- a status line, headers, then a Content-Length, chunked or close-delimited body - with
byte scans, and hands ``on_data`` everything one ``feed`` decoded in a single call, so
chunks that arrive together leave in one write.

Strict where it matters for reuse: a malformed size line, a missing chunk CRLF or
conflicting framing headers raise ``ResponseError`` and the connection is discarded.
"""
from __future__ import annotations

from typing import Protocol

_HEX = frozenset(b"0123456789abcdefABCDEF")
MAX_HEAD = 64 * 1024
MAX_SIZE_LINE = 1024


class ResponseError(Exception):
    """The provider sent something that is not valid HTTP/1.1."""


class BodySink(Protocol):
    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, data: bytes) -> None: ...

    def on_end(self) -> None: ...


HEAD, LENGTH, SIZE, DATA, DATA_CRLF, TRAILER, UNTIL_EOF, DONE = range(8)


class ResponseParser:
    """Parses exactly one response; ``keep_alive`` says whether the connection may be reused."""

    __slots__ = ("_sink", "_state", "_buf", "_remaining", "keep_alive", "_no_body", "status",
                 "_ended")

    def __init__(self, sink: BodySink, *, no_body: bool = False):
        self._sink = sink
        self._state = HEAD
        self._buf = b""
        self._remaining = 0
        self._no_body = no_body
        self.keep_alive = True
        self.status = 0
        self._ended = False

    @property
    def done(self) -> bool:
        return self._state == DONE

    def feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else bytes(data)
        self._buf = b""
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state == SIZE:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_SIZE_LINE:
                        raise ResponseError("chunk size line too long")
                    break
                size = _chunk_size(buf[pos:nl])
                pos = nl + 2
                stop = pos + size
                if size and stop + 2 <= end:  # fast path: the whole chunk is here
                    if buf[stop : stop + 2] != b"\r\n":
                        raise ResponseError("missing CRLF after chunk data")
                    out.append(buf[pos:stop])
                    pos = stop + 2
                    continue
                self._remaining = size
                self._state = DATA if size else TRAILER
            elif state == DATA:
                take = min(self._remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = DATA_CRLF
            elif state == DATA_CRLF:
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ResponseError("missing CRLF after chunk data")
                pos += 2
                self._state = SIZE
            elif state == LENGTH:
                take = min(self._remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = DONE
            elif state == UNTIL_EOF:
                out.append(buf[pos:])
                pos = end
            elif state == HEAD:
                head_end = buf.find(b"\r\n\r\n", pos)
                if head_end < 0:
                    if end - pos > MAX_HEAD:
                        raise ResponseError("response head too large")
                    break
                if out:
                    raise ResponseError("unexpected bytes before head")
                self._head(buf[pos:head_end])
                pos = head_end + 4
            elif state == TRAILER:  # trailer lines until an empty one
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_HEAD:
                        raise ResponseError("trailers too large")
                    break
                if nl == pos:
                    self._state = DONE
                pos = nl + 2
            else:  # DONE: bytes after a complete response
                self.keep_alive = False
                pos = end
        if pos < end:
            self._buf = buf[pos:]
        if out:
            self._sink.on_data(out[0] if len(out) == 1 else b"".join(out))
        if self._state == DONE and self.status and not self._ended:
            self._ended = True
            if self._buf:
                self.keep_alive = False
            self._sink.on_end()

    def feed_eof(self) -> None:
        """The provider closed the connection: fine only for a close-delimited body."""
        if self._state == UNTIL_EOF:
            self._state = DONE
            self.keep_alive = False
            self._ended = True
            self._sink.on_end()
        elif self._state != DONE:
            raise ResponseError("provider closed the connection mid-response")

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status_line = lines[0]
        if not status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or len(status_line) < 12:
            raise ResponseError("bad status line")
        code = status_line[9:12]
        if not code.isdigit():
            raise ResponseError("bad status code")
        status = int(code)
        if status_line.startswith(b"HTTP/1.0"):
            self.keep_alive = False
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b"\n" in line or b"\r" in line:
                raise ResponseError("bad header line")
            name = name.lower()
            value = value.strip()
            if name == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise ResponseError("bad Content-Length")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise ResponseError("unsupported Transfer-Encoding")
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            headers.append((name, value))
        if 100 <= status < 200:
            return  # interim response: the real head follows
        if chunked and length is not None:
            raise ResponseError("both Content-Length and chunked")
        self.status = status
        self._sink.on_head(status, headers)
        if self._no_body or status in (204, 304):
            self._state = DONE
        elif chunked:
            self._state = SIZE
        elif length is not None:
            self._remaining = length
            self._state = LENGTH if length else DONE
        else:
            self.keep_alive = False
            self._state = UNTIL_EOF


def _chunk_size(line: bytes) -> int:
    size = line.split(b";", 1)[0].strip() if b";" in line or b" " in line else line
    if not size or len(size) > 16 or not _HEX.issuperset(size):
        raise ResponseError("bad chunk size")
    return int(size, 16)

