"""A cheap idle deadline for hot paths.

Re-arming ``loop.call_later`` for every chunk costs a TimerHandle allocation and a heap
operation; ``touch()`` only stores a timestamp, and the single timer re-arms itself for
the remaining time when it fires early.
"""
from __future__ import annotations

import asyncio
from typing import Callable

_SLACK_S = 0.001


class Deadline:
    """Calls ``on_expire`` once ``timeout`` seconds pass without ``touch()``."""

    __slots__ = ("_loop", "_on_expire", "_handle", "_last", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[], None]):
        self._loop = loop
        self._on_expire = on_expire
        self._handle: asyncio.TimerHandle | None = None
        self._last = 0.0
        self.timeout = 0.0

    def arm(self, timeout: float) -> None:
        """(Re)start the deadline with a new timeout; 0 disables it."""
        self.cancel()
        self.timeout = timeout
        if timeout > 0:
            self._last = self._loop.time()
            self._handle = self._loop.call_at(self._last + timeout, self._fire)

    def touch(self) -> None:
        self._last = self._loop.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        due = self._last + self.timeout
        # uvloop rounds timers to whole milliseconds and may fire up to 0.5 ms early;
        # re-arming for that remainder would spin through zero-delay callbacks.
        if self._loop.time() < due - _SLACK_S:
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._handle = None
        self._on_expire()
