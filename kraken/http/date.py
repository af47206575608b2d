"""The Date header of every response, HTTP/1.1 and HTTP/2 alike."""
from __future__ import annotations

import time


class _DateHeader:
    """Formatted once per second rather than per response."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        return self._value


DATE = _DateHeader()
