"""Request body framing for HTTP/1.1 and the slow-POST pace, with no I/O.

Kraken frames bodies itself rather than through h11: h11's chunked reader accepts any byte
but LF in a chunk extension, bare LF and obs-fold in trailers, and unbounded extensions and
trailers, each a way for a proxy in front of Kraken and Kraken to disagree on where a
request ends (smuggling). HTTP/2 uses ``BodyPace`` too.
"""
from __future__ import annotations

import asyncio
import re
from typing import Callable

from kraken.config import ServerConfig

_MAX_CHUNK = 1 << 63
"""A chunk size past a signed 64-bit integer is an overflow probe aimed at other servers,
refused as malformed rather than as too large."""
_MAX_CHUNK_LINE = 4096
"""Longest chunk-size line (with its extensions); clients send none, or a few bytes."""
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")
"""RFC 9112 §7.1: hex size, then extensions free of control bytes (no bare CR/LF, no NUL)."""
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")
"""A trailer field: token, colon, no whitespace before it, no control bytes, no obs-fold."""
_TIMER_SLACK_S = 0.001


class BodyRejected(Exception):
    """The body is malformed or over a limit: answer ``status`` and close."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


class FixedBody:
    """A Content-Length body (or none: length 0)."""

    __slots__ = ("left",)

    def __init__(self, length: int):
        self.left = length

    def feed(self, data: bytes, out: list[bytes]) -> bytes | None:
        """Append the body bytes of ``data`` to ``out``; once the body is complete, return
        the bytes after it (the next pipelined request), else None."""
        left = self.left
        if len(data) < left:
            if data:
                out.append(data)
            self.left = left - len(data)
            return None
        if left:
            out.append(data if len(data) == left else data[:left])
            self.left = 0
            return data[left:]
        return data


_SIZE, _DATA, _DATA_END, _TRAILER = "SIZE", "DATA", "DATA_END", "TRAILER"


class ChunkedBody:
    """A strict ``Transfer-Encoding: chunked`` decoder (RFC 9112 §7.1); no I/O.

    Refuses what h11 lets through: control bytes in chunk extensions (a bare CR some
    servers take for a line end), whitespace after the size without an extension, chunk
    lines over ``_MAX_CHUNK_LINE``, trailer sections over ``max_trailer`` bytes or with
    bare LF, obs-fold or malformed fields. A declared chunk that would take the body past
    ``limit`` is refused (413) before its bytes arrive. Trailer fields are dropped.

        SIZE ──size > 0──▶ DATA ──size bytes──▶ DATA_END ──CRLF──▶ SIZE
        SIZE ──size 0──▶ TRAILER ──empty line──▶ done
    """

    __slots__ = ("_state", "_left", "_buf", "_limit", "_max_trailer", "_trailer", "size")

    def __init__(self, limit: int, max_trailer: int):
        self._state = _SIZE
        self._left = 0
        self._buf = b""
        """An incomplete line (size, data end or trailer) from the previous read."""
        self._limit = limit
        self._max_trailer = max_trailer
        self._trailer = 0
        self.size = 0
        """Body bytes declared so far."""

    def feed(self, data: bytes, out: list[bytes]) -> bytes | None:
        """As ``FixedBody.feed``; raises ``BodyRejected``."""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, end = 0, len(data)
        state = self._state
        while pos < end:
            if state is _DATA:
                n = min(self._left, end - pos)
                out.append(data if n == end else data[pos:pos + n])
                pos += n
                self._left -= n
                if not self._left:
                    state = _DATA_END
            elif state is _DATA_END:
                if data[pos:pos + 2] == b"\r\n":
                    pos += 2
                    state = _SIZE
                elif data[pos:pos + 2] != b"\r":  # not even the start of CRLF
                    raise BodyRejected("chunk data not followed by CRLF")
                else:
                    break
            elif state is _SIZE:
                eol = data.find(b"\r\n", pos, pos + _MAX_CHUNK_LINE + 2)
                if eol < 0:
                    if end - pos > _MAX_CHUNK_LINE:
                        raise BodyRejected("chunk size line too long")
                    if data.find(b"\n", pos) >= 0:
                        raise BodyRejected("bare LF in chunk size line")
                    break
                match = _CHUNK_LINE.fullmatch(data, pos, eol)
                if match is None:
                    raise BodyRejected("malformed chunk size line")
                size = int(match.group(1), 16)
                pos = eol + 2
                if not size:
                    state = _TRAILER
                elif size >= _MAX_CHUNK:
                    raise BodyRejected("chunk size overflow")
                elif self.size + size > self._limit:
                    raise BodyRejected("request body too large", 413)
                else:
                    self.size += size
                    self._left = size
                    state = _DATA
            else:  # _TRAILER: field lines until an empty one
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if self._trailer + end - pos > self._max_trailer:
                        raise BodyRejected("trailer section too large", 431)
                    if data.find(b"\n", pos) >= 0:
                        raise BodyRejected("bare LF in trailer section")
                    break
                if eol == pos:
                    self._state = state
                    return data[pos + 2:]
                self._trailer += eol - pos + 2
                if self._trailer > self._max_trailer:
                    raise BodyRejected("trailer section too large", 431)
                if _TRAILER_LINE.fullmatch(data, pos, eol) is None:
                    raise BodyRejected("malformed trailer field")
                pos = eol + 2
        self._state = state
        if pos < end:
            self._buf = data[pos:]
        return None


class BodyPace:
    """Slow-POST defence (like Apache mod_reqtimeout's MinRate): ``grace`` seconds after a
    body starts, it must have averaged ``rate`` bytes per second, or ``on_slow`` is called.

    Allowed time = ``grace + received / rate``; the one timer re-arms itself for what the
    bytes received since bought, so ``add`` on the hot path only adds."""

    __slots__ = ("_loop", "_on_slow", "_start", "_grace", "_rate", "_handle", "received")

    def __init__(self, loop: asyncio.AbstractEventLoop, grace: float, rate: float,
                 on_slow: Callable[[], None]):
        self._loop = loop
        self._on_slow = on_slow
        self._start = loop.time()
        self._grace = grace
        self._rate = rate
        self.received = 0
        self._handle: asyncio.TimerHandle | None = loop.call_at(self._start + grace, self._check)

    @classmethod
    def start(cls, loop: asyncio.AbstractEventLoop, cfg: ServerConfig,
              on_slow: Callable[[], None]) -> BodyPace | None:
        """A pace for a body starting now, or None if either setting turns it off."""
        grace, rate = cfg.body_timeout_s, cfg.body_min_rate_bytes_s
        if grace <= 0 or rate <= 0:
            return None
        return cls(loop, grace, rate, on_slow)

    def add(self, n: int) -> None:
        self.received += n

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        due = self._start + self._grace + self.received / self._rate
        if self._loop.time() < due - _TIMER_SLACK_S:
            self._handle = self._loop.call_at(due, self._check)
            return
        self._handle = None
        self._on_slow()
