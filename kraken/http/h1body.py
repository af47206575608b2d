"""Request body framing for HTTP/1.1 and the slow-POST pace, with no I/O.

The framing readers (``FixedBody``, the strict ``ChunkedBody``) live in
``kraken.h1framing``, shared with the provider-response parser; ``BodyRejected`` is
their ``FramingError``. HTTP/2 uses ``BodyPace`` too.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from kraken.config import ServerConfig
from kraken.h1framing import ChunkedBody, FixedBody
from kraken.h1framing import FramingError as BodyRejected

__all__ = ["BodyPace", "BodyRejected", "ChunkedBody", "FixedBody"]

_TIMER_SLACK_S = 0.001


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
