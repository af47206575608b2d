"""The mock providers' HTTP/1.1 wire format: an incremental request parser and response framing.

Pure bytes in, bytes out (no sockets), shared by every mock in ``kraken.mock``. The mocks are the
latency floor in benchmarks, so this avoids h11: it handles the subset a provider needs
(Content-Length and chunked bodies, keep-alive, pipelining) in a few microseconds per request.
Chunked request bodies go through Kraken's one strict chunked decoder (``kraken.h1framing``).
"""
from __future__ import annotations

import http
from typing import NamedTuple

from kraken.h1framing import ChunkedBody, FramingError

__all__ = ["JSON", "MAX_BODY", "MAX_HEAD", "SSE", "ParseError", "ParsedRequest", "RequestParser",
           "frame", "response_head", "status_line"]

MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
JSON = b"application/json"
SSE = b"text/event-stream; charset=utf-8"


# ----------------------------------------------------------------------------- request parser


class ParseError(Exception):
    """Malformed request: answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ParsedRequest(NamedTuple):
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    http10: bool


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class RequestParser:
    """Bytes in, complete requests out; never touches a socket.

    h11 costs ~50-90 us per request head here (DECISIONS.md); this handles the subset a
    provider needs (Content-Length and chunked bodies, keep-alive, pipelining) in a few us.
    A request that arrives in one segment is parsed from that segment without copying it.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY):
        self.buf = b""
        self.pos = 0
        self.max_head = max_head
        self.max_body = max_body
        self.expect_continue = False  # set once when a head asks for "100 Continue"
        self._head: tuple | None = None
        self._length = 0  # Content-Length, or -1 for chunked
        self._parts: list[bytes] | None = None  # a long body, collected without quadratic copies
        self._have = 0
        self._chunked: ChunkedBody | None = None
        self._chunks: list[bytes] = []

    @property
    def buffered(self) -> int:
        chunked = self._chunked
        return len(self.buf) - self.pos + self._have + (chunked.size if chunked else 0)

    def feed(self, data: bytes) -> None:
        if self._parts is not None:
            self._parts.append(data)
            self._have += len(data)
        elif self.pos >= len(self.buf):
            self.buf, self.pos = data, 0
        else:
            self.buf, self.pos = self.buf[self.pos :] + data, 0

    def next(self) -> ParsedRequest | None:
        """The next complete request, or None until more bytes arrive. Raises ParseError."""
        if self._head is None and not self._parse_head():
            return None
        length = self._length
        if length >= 0:
            if self._parts is not None:
                if self._have < length:
                    return None
                self.buf, self.pos = b"".join(self._parts), 0
                self._parts, self._have = None, 0
            pos = self.pos
            if len(self.buf) - pos < length:
                self._parts, self._have = [self.buf[pos:]], len(self.buf) - pos
                self.buf, self.pos = b"", 0
                return None
            body = self.buf[pos : pos + length]
            self.pos = pos + length
        else:
            body = self._parse_chunked()
            if body is None:
                return None
        method, target, headers, keep_alive, http10 = self._head
        self._head = None
        return ParsedRequest(method, target, headers, body, keep_alive, http10)

    def _parse_head(self) -> bool:
        buf, pos = self.buf, self.pos
        while buf.startswith(b"\r\n", pos):  # RFC 9112 2.2: ignore empty lines before a request
            pos += 2
        self.pos = pos
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0 or end - pos > self.max_head:
            if len(buf) - pos > self.max_head:
                raise ParseError(431, "Request header fields too large.")
            return False
        lines = buf[pos:end].split(b"\r\n")
        self.pos = end + 4
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise ParseError(400, "Malformed request line.")
        method, target, version = parts
        if version == b"HTTP/1.1":
            http10 = False
        elif version == b"HTTP/1.0":
            http10 = True
        else:
            raise ParseError(505, "HTTP version not supported.")
        headers = []
        length = None
        chunked = False
        conn = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or not _TOKEN.issuperset(name):
                raise ParseError(400, "Malformed header line.")
            name = name.lower()
            value = value.strip(b" \t")
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ParseError(400, "Invalid Content-Length.")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise ParseError(501, "Unsupported Transfer-Encoding.")
                chunked = True
            elif name == b"connection":
                conn = value.lower()
            elif name == b"expect" and value.lower() == b"100-continue" and not http10:
                self.expect_continue = True
        if chunked and length is not None:
            raise ParseError(400, "Both Content-Length and Transfer-Encoding.")
        if (length or 0) > self.max_body:
            raise ParseError(413, "Request body too large.")
        keep_alive = (b"keep-alive" in conn) if http10 else (b"close" not in conn)
        self._length = -1 if chunked else (length or 0)
        self._chunked = ChunkedBody(self.max_body, self.max_head) if chunked else None
        self._chunks = []
        self._head = (method.decode("ascii"), target.decode("latin-1"), headers, keep_alive, http10)
        return True

    def _parse_chunked(self) -> bytes | None:
        """Hand what is buffered to the chunked decoder; the body once it is complete."""
        buf, pos, chunked = self.buf, self.pos, self._chunked
        assert chunked is not None
        try:
            rest = chunked.feed(buf[pos:] if pos else buf, self._chunks)
        except FramingError as exc:
            reason = str(exc)
            raise ParseError(exc.status, f"{reason[:1].upper()}{reason[1:]}.") from None
        if rest is None:
            self.buf, self.pos = b"", 0
            return None
        self.buf, self.pos = rest, 0
        body = b"".join(self._chunks)
        self._chunked, self._chunks = None, []
        return body


# ----------------------------------------------------------------------------- response framing


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


_HEAD_CACHE: dict[tuple, bytes] = {}


def response_head(status: int, ctype: bytes, length: int | None, close: bool, http10: bool) -> bytes:
    """Status line + headers; ``length=None`` means chunked (an HTTP/1.0 peer gets close-delimited)."""
    key = (status, ctype, length, close, http10)
    head = _HEAD_CACHE.get(key)
    if head is None:
        lines = [status_line(status), b"content-type: " + ctype + b"\r\n"]
        if length is not None:
            lines.append(b"content-length: %d\r\n" % length)
        elif not http10:
            lines.append(b"transfer-encoding: chunked\r\n")
        if length is None:
            lines.append(b"cache-control: no-cache\r\n")
        if status == 429:
            lines.append(b"retry-after: 1\r\n")
        if close:
            lines.append(b"connection: close\r\n")
        elif http10:
            lines.append(b"connection: keep-alive\r\n")
        head = b"".join(lines) + b"\r\n"
        if len(_HEAD_CACHE) > 4096:
            _HEAD_CACHE.clear()
        _HEAD_CACHE[key] = head
    return head


def frame(event: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(event), event)
