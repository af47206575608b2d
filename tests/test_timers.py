"""kraken/timers.py: a deadline's loop timer is made a turn after it is armed, and only if it
is still armed then. Run on a plain asyncio loop whose ``call_at`` is counted (the loop's API,
not Kraken's code)."""
from __future__ import annotations

import asyncio

import pytest

from kraken.timers import Deadline


class CountingLoop:
    """A fresh asyncio loop, its ``call_at`` calls for deadlines counted."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.timers = 0
        call_at = self.loop.call_at

        def counted(when, callback, *args, **kwargs):
            if type(getattr(callback, "__self__", None)) is Deadline:
                self.timers += 1  # the timers' own, not those of the test's sleeps
            return call_at(when, callback, *args, **kwargs)

        self.loop.call_at = counted  # type: ignore[method-assign]

    def turns(self, n: int = 3) -> None:
        for _ in range(n):
            self.loop.run_until_complete(asyncio.sleep(0))

    def run_for(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))


@pytest.fixture
def counting():
    loop = CountingLoop()
    yield loop
    loop.loop.close()


def test_a_deadline_stopped_in_the_turn_it_was_armed_makes_no_loop_timer(counting):
    fired: list[str] = []
    deadlines = [Deadline(counting.loop, lambda: fired.append("x")) for _ in range(100)]
    for deadline in deadlines:
        deadline.arm(0.01)
    for deadline in deadlines:
        deadline.stop()  # e.g. a new connection's head timer, its head read in the same turn
    counting.turns()
    counting.run_for(0.05)
    assert counting.timers == 0 and fired == []


def test_a_deadline_still_armed_after_its_turn_gets_its_timer_and_fires_once_when_due(counting):
    loop = counting.loop
    fired: list[float] = []
    deadline = Deadline(loop, lambda: fired.append(loop.time()))
    deadline.arm(0.05)
    armed_at = deadline.last
    counting.turns()
    assert counting.timers == 1
    counting.run_for(0.2)
    assert len(fired) == 1 and fired[0] >= armed_at + 0.05 - 0.002


def test_a_deadline_touched_fires_only_after_the_idle_time_and_a_closed_one_never(counting):
    loop = counting.loop
    fired: list[str] = []
    idle = Deadline(loop, lambda: fired.append("idle"))
    closed = Deadline(loop, lambda: fired.append("closed"))
    idle.arm(0.08)
    closed.arm(0.02)
    counting.turns()
    closed.close()
    for _ in range(4):  # activity every 40 ms keeps it alive
        counting.run_for(0.04)
        idle.touch()
    assert fired == []
    counting.run_for(0.2)
    assert fired == ["idle"]

