"""Cheap deadlines for hot paths.

Re-arming ``loop.call_later`` for every chunk costs a TimerHandle allocation and a heap
operation; ``Deadline.touch()`` only stores a timestamp, and the single timer re-arms itself
for the remaining time when it fires early. A deadline's timer is made one turn of the loop
after it is armed, and only if it is still armed then: most are stopped within the turn (a new
connection's head timer, once its head is read), and never cost a timer at all.

A leaf: inbound (``http``) and outbound (``upstream``) connections both use it.
"""
from __future__ import annotations

import asyncio
import weakref
from typing import Callable

_SLACK_S = 0.001


class _NewTimers:
    """One loop's deadlines armed in this turn: their timers are made in the next turn, for
    those still armed then. Bounded by the deadlines (connections) armed in one turn; emptied
    at every turn."""

    __slots__ = ("loop", "_armed", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = weakref.ref(loop)
        """Weak: this is the loop's value in ``_NEW_TIMERS``, which must not keep it alive."""
        self._armed: list[Deadline] = []
        self._scheduled = False

    def add(self, deadline: Deadline) -> None:
        self._armed.append(deadline)
        if not self._scheduled:
            loop = self.loop()
            if loop is not None:
                self._scheduled = True
                loop.call_soon(self._make)

    def _make(self) -> None:
        self._scheduled = False
        armed, self._armed = self._armed, []
        for deadline in armed:
            deadline._make_timer()


_NEW_TIMERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _NewTimers] = (
    weakref.WeakKeyDictionary())
_last: _NewTimers | None = None
"""The loop's asked for last (a process has one loop, but for tests): no lookup per deadline."""


def _new_timers(loop: asyncio.AbstractEventLoop) -> _NewTimers:
    global _last
    timers = _last
    if timers is None or timers.loop() is not loop:
        timers = _NEW_TIMERS.get(loop)
        if timers is None:
            timers = _NEW_TIMERS[loop] = _NewTimers(loop)
        _last = timers
    return timers


class Deadline:
    """Calls ``on_expire`` once ``timeout`` seconds pass without ``touch()``."""

    __slots__ = ("_loop", "_on_expire", "_handle", "last", "timeout", "_new_timers", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expire: Callable[[], None]):
        self._loop = loop
        self._on_expire: Callable[[], None] | None = on_expire
        self._handle: asyncio.TimerHandle | None = None
        self._new_timers = _new_timers(loop)
        self._pending = False
        """Armed without a timer: ``_new_timers`` makes it in the next turn, if still armed."""
        self.last = 0.0
        """Loop time of the last activity. A per-read hot path may store ``loop.time()`` here
        itself: the same as ``touch()``, one Python call less."""
        self.timeout = 0.0

    def arm(self, timeout: float) -> None:
        """(Re)start the deadline with a new timeout; 0 disables it.

        A timer already due no later than the new deadline is kept (it re-arms itself
        for the rest when it fires), so the common arm/cancel/arm cycle of a keep-alive
        connection costs no timer-heap work. Without one, the timer is made in the next turn
        of the loop if the deadline is still armed then (module doc).
        """
        if self._on_expire is None:  # closed
            return
        self.timeout = timeout
        if timeout <= 0:
            return
        now = self._loop.time()
        self.last = now
        handle = self._handle
        if handle is not None:
            if handle.when() <= now + timeout + _SLACK_S:
                return
            handle.cancel()
            self._handle = None
        if not self._pending:
            self._pending = True
            self._new_timers.add(self)

    def _make_timer(self) -> None:
        """The turn after ``arm``: the timer, if the deadline is still armed and has none."""
        self._pending = False
        if self.timeout > 0 and self._handle is None and self._on_expire is not None:
            self._handle = self._loop.call_at(self.last + self.timeout, self._fire)

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

