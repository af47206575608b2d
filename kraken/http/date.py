"""The Date header of every response, HTTP/1.1 and HTTP/2 alike."""
from __future__ import annotations

import time


class _DateHeader:
    """Formatted once per second rather than per response."""

    __slots__ = ("_second", "_value", "_line")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""
        self._line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._set(now)
        return self._value

    def line(self) -> bytes:
        """The HTTP/1.1 header lines every response starts with: Date, then Server."""
        now = int(time.time())
        if now != self._second:
            self._set(now)
        return self._line

    def _set(self, now: int) -> None:
        self._second = now
        self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        self._line = b"date: %s\r\nserver: kraken\r\n" % self._value


DATE = _DateHeader()
