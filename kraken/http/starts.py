"""Request handlers begin at most ``PER_TURN`` per turn of the event loop; the rest wait their turn.

In a burst, one turn of the loop reads hundreds of new requests. Begun at once, each handler
runs its first step (key, limits, route, the provider send: ~60 µs) before the loop looks at
its sockets again, so the provider's answers to the requests sent first wait behind the first
steps of every request read after them, and the first bytes all come late together. Paced,
a turn begins at most ``PER_TURN`` handlers and the others wait, in arrival order, for the
next turns, whose reads relay the answers that came meanwhile: first come, first served.
A burst of 1000 streams on a warm provider pool (``bench/run.py``'s "burst again"): TTFB p50
73 -> 50 ms (medians of 10 bursts each, interleaved), nginx's 53 in the same table. A steady
load of up to ``PER_TURN`` connections never waits; a cold burst, whose streams each dial the
provider, is bound by that CPU and gains nothing.

A request read while others wait is not even parsed until its turn (``H1Connection._queue``):
parsed on arrival, a burst's later requests each ran their parse ahead of the first bytes of the
requests already waiting. A cold burst of 1000 streams (``bench/ab.py --scenario burst``, two
runs of 24 interleaved rounds): TTFB p50 66.8 -> 65.4 and 61.9 -> 60.1 ms (medians; lower in 28
rounds of 48, p = 0.31): a little, as a cold burst's streams mostly wait on their dials' CPU.

Both protocols' requests wait in the same line (``InboundConnection._pace``). The line is
bounded by the connections: an HTTP/1.1 connection has at most one request in it (it reads no
further request until its handler ends), an HTTP/2 connection at most its concurrent-stream
limit; ``kraken_handler_starts_waiting`` is its gauge.
"""
from __future__ import annotations

import asyncio
import collections
import weakref
from typing import Callable

from kraken import metrics

PER_TURN = 32
"""Handlers begun in one turn of the loop before the others wait for the next turns (as many
as a c=32 load's connections: such a load is never paced)."""


class StartPacer:
    """One loop's handler starts: ``now()`` or, when this turn has begun enough, ``later()``."""

    __slots__ = ("_loop", "_waiting", "_begun", "_draining")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = weakref.ref(loop)
        """Weak: the pacer is the loop's value in ``_PACERS``, which must not keep it alive."""
        self._waiting: collections.deque[Callable[[], None]] = collections.deque()
        self._begun = 0
        """Handlers begun since this turn's count started (reset by a callback of the turn)."""
        self._draining = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def would_wait(self) -> bool:
        """Whether a handler asking to begin now would be told to wait (``now()`` without
        counting one): a connection then queues its request unparsed (``H1Connection``)."""
        return self._draining or self._begun >= PER_TURN

    def now(self) -> bool:
        """True, counted, if a handler may begin in this turn: fewer than ``PER_TURN`` have,
        and none waits (while any does, the drain begins ``PER_TURN`` a turn on its own)."""
        if self._draining or self._begun >= PER_TURN:
            return False
        if not self._begun:  # the turn's first: its ready callbacks reset the count
            self._soon(self._new_turn)
        self._begun += 1
        return True

    def later(self, begin: Callable[[], None]) -> None:
        """Queue ``begin`` behind the others; the next turns call at most ``PER_TURN`` each."""
        self._waiting.append(begin)
        if not self._draining:
            self._draining = True
            self._soon(self._drain)

    def flush(self) -> None:
        """Begin every waiting handler now (shutdown: what was read before it is served)."""
        while self._waiting:
            self._waiting.popleft()()

    def _soon(self, callback: Callable[[], None]) -> None:
        loop = self._loop()
        if loop is not None:
            loop.call_soon(callback)

    def _new_turn(self) -> None:
        self._begun = 0

    def _drain(self) -> None:
        """A turn's waiting handlers: up to ``PER_TURN`` begin (their first steps run in the
        next turn, so that turn begins no others); a turn with none left ends the drain."""
        waiting = self._waiting
        if not waiting:
            self._draining = False
            self._begun = 0  # the next turn's handlers may begin at once again
            return
        try:
            for _ in range(PER_TURN):
                if not waiting:
                    break
                waiting.popleft()()
        finally:  # a begin that raised (a bug: it is logged by the loop) does not stop the line
            self._soon(self._drain)  # the next turn: after its reads


_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StartPacer] = (
    weakref.WeakKeyDictionary())


def pacer_for(loop: asyncio.AbstractEventLoop) -> StartPacer:
    """The loop's pacer (one per loop: a turn is the loop's; asked once per connection)."""
    pacer = _PACERS.get(loop)
    if pacer is None:
        pacer = _PACERS[loop] = StartPacer(loop)
    return pacer


def _waiting() -> int:
    """Requests waiting for their turn, on every loop of the process (read at each scrape, as
    the meter's queue depth is: nothing is counted on the way in or out)."""
    return sum(pacer.waiting for pacer in list(_PACERS.values()))


metrics.HANDLER_STARTS_WAITING.set_function(_waiting)
