"""A cheap idle deadline for hot paths.

Re-arming ``loop.call_later`` for every chunk costs a TimerHandle allocation and a heap
operation; ``touch()`` only stores a timestamp, and the single timer re-arms itself for
the remaining time when it fires early.

A leaf: inbound (``http``) and outbound (``upstream``) connections both use it. Where the C
extension was built, ``Deadline`` is ``kraken._speedups.Deadline`` (kraken/csrc/deadline.c):
the same behaviour with no Python frame per call; ``PyDeadline`` is its definition and serves
elsewhere (tests/test_timers.py runs both).
"""
from __future__ import annotations

import asyncio
from typing import Callable

from kraken.speedups import native, pick

_SLACK_S = 0.001


class PyDeadline:
    """Calls ``on_expire`` once ``timeout`` seconds pass without ``touch()``."""

    __slots__ = ("_loop", "_on_expire", "_handle", "last", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[], None]):
        self._loop = loop
        self._on_expire: Callable[[], None] | None = on_expire
        self._handle: asyncio.TimerHandle | None = None
        self.last = 0.0
        """Loop time of the last activity. A per-read hot path may store ``loop.time()`` here
        itself: the same as ``touch()``, one Python call less."""
        self.timeout = 0.0

    def arm(self, timeout: float) -> None:
        """(Re)start the deadline with a new timeout; 0 disables it.

        A timer already due no later than the new deadline is kept (it re-arms itself
        for the rest when it fires), so the common arm/cancel/arm cycle of a keep-alive
        connection costs no timer-heap work.
        """
        if self._on_expire is None:  # closed
            return
        self.timeout = timeout
        if timeout <= 0:
            return
        now = self._loop.time()
        self.last = now
        due = now + timeout
        handle = self._handle
        if handle is not None:
            if handle.when() <= due + _SLACK_S:
                return
            handle.cancel()
        self._handle = self._loop.call_at(due, self._fire)

    def touch(self) -> None:
        self.last = self._loop.time()

    def cancel(self) -> None:
        """Disarm while the owner lives on. A pending timer stays scheduled, fires once into
        nothing, or is reused; until then it holds this deadline and its owner, so an owner
        that is finished must ``stop`` (or ``close``) instead."""
        self.timeout = 0.0

    def stop(self) -> None:
        """Disarm for good (the owner is closing): drop the timer and its reference to us."""
        self.timeout = 0.0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """``stop`` and forget the callback: the owner is gone for good. The owner (which
        holds this deadline) and its bound method would otherwise form a reference cycle,
        freed only by a full gc run; a flood of short connections piles up meanwhile.
        ``arm`` does nothing afterwards."""
        self.stop()
        self._on_expire = None

    def _fire(self) -> None:
        self._handle = None
        if self.timeout <= 0:
            return
        due = self.last + self.timeout
        # uvloop rounds timers to whole milliseconds and may fire up to 0.5 ms early;
        # re-arming for that remainder would spin through zero-delay callbacks.
        if self._loop.time() < due - _SLACK_S:
            self._handle = self._loop.call_at(due, self._fire)
            return
        self.timeout = 0.0
        on_expire = self._on_expire
        if on_expire is not None:
            on_expire()


Deadline = pick(native("Deadline"), PyDeadline)
"""What serves: the C version where it was built (and ``KRAKEN_PURE_PYTHON`` is not set)."""
