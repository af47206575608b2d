"""kraken.timers.Deadline: both versions (Python, and C where the extension was built) behave
the same. Most tests drive a loop whose clock the test sets, so every decision (keep the
timer, re-arm for the rest, expire) is checked exactly; one runs on the real loop."""
from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from kraken import speedups, timers

VERSIONS = [pytest.param(timers.PyDeadline, id="python")]
if speedups.native("Deadline") is not None:
    VERSIONS.append(pytest.param(speedups.native("Deadline"), id="c"))


class Handle:
    def __init__(self, when: float, callback):
        self._when, self.callback, self.cancelled = when, callback, False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class ClockLoop:
    """A loop as a deadline sees it: ``time()`` is what the test set; timers are recorded."""

    def __init__(self):
        self.now = 100.0
        self.timers: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback) -> Handle:
        handle = Handle(when, callback)
        self.timers.append(handle)
        return handle

    def run_due(self) -> None:
        """Call every timer due by now that was not cancelled (each once)."""
        due, self.timers = ([h for h in self.timers if h.when() <= self.now and not h.cancelled],
                            [h for h in self.timers if h.when() > self.now and not h.cancelled])
        for handle in due:
            handle.callback()


@pytest.fixture(params=VERSIONS)
def make(request):
    loop, expired = ClockLoop(), []
    deadline = request.param(loop, lambda: expired.append(loop.now))
    return loop, deadline, expired


def test_an_armed_deadline_expires_once_its_timeout_passes(make):
    loop, deadline, expired = make
    deadline.arm(5.0)
    assert deadline.last == 100.0 and deadline.timeout == 5.0
    (timer,) = loop.timers
    assert timer.when() == 105.0
    loop.now = 104.9
    loop.run_due()
    assert expired == []
    loop.now = 105.0
    loop.run_due()
    assert expired == [105.0] and deadline.timeout == 0.0 and deadline._handle is None
    loop.now = 200.0
    loop.run_due()
    assert expired == [105.0]  # once


def test_activity_postpones_the_expiry_with_the_same_timer(make):
    loop, deadline, expired = make
    deadline.arm(5.0)
    loop.now = 103.0
    deadline.touch()
    assert deadline.last == 103.0
    loop.now = 105.0
    loop.run_due()  # fires early: re-arms itself for the rest, expires nothing
    assert expired == []
    (rest,) = loop.timers
    assert rest.when() == 108.0
    loop.now = 108.0
    loop.run_due()
    assert expired == [108.0]


def test_a_timer_firing_within_the_slack_expires(make):
    """uvloop may fire up to 0.5 ms early: that is not re-armed for the remainder."""
    loop, deadline, expired = make
    deadline.arm(5.0)
    loop.now = 104.9995
    loop.timers[0].callback()
    assert expired == [104.9995] and loop.timers[1:] == []


def test_rearming_keeps_a_timer_due_no_later_and_replaces_a_later_one(make):
    loop, deadline, _ = make
    deadline.arm(5.0)
    deadline.arm(10.0)  # the kept timer (due 105) re-arms itself for the rest when it fires
    assert len(loop.timers) == 1 and deadline.timeout == 10.0
    deadline.arm(1.0)  # due 101: sooner than the timer, which is cancelled for a new one
    first, second = loop.timers
    assert first.cancelled and not second.cancelled and second.when() == 101.0
    assert deadline._handle is second


def test_a_cancelled_deadline_fires_into_nothing_and_its_timer_is_reused(make):
    loop, deadline, expired = make
    deadline.arm(5.0)
    deadline.cancel()
    assert deadline.timeout == 0.0 and deadline._handle is loop.timers[0]
    deadline.arm(5.0)  # the pending timer serves again: no new one
    assert len(loop.timers) == 1
    deadline.cancel()
    loop.now = 106.0
    loop.run_due()
    assert expired == [] and deadline._handle is None


def test_zero_disarms_without_a_timer(make):
    loop, deadline, expired = make
    deadline.arm(0)
    deadline.arm(-1.0)
    assert loop.timers == [] and deadline.timeout == -1.0


def test_stop_drops_the_timer_and_close_forgets_the_callback(make):
    loop, deadline, expired = make
    deadline.arm(5.0)
    deadline.stop()
    assert loop.timers[0].cancelled and deadline._handle is None and deadline.timeout == 0.0
    deadline.arm(5.0)
    deadline.close()
    assert loop.timers[1].cancelled and deadline._on_expire is None
    deadline.arm(5.0)  # closed: nothing
    assert len(loop.timers) == 2 and deadline.timeout == 0.0


def test_the_loop_a_deadline_asks_can_be_replaced(make):
    """Tests count a connection's timers by swapping its deadline's loop (test_h1_behaviour)."""
    loop, deadline, _ = make
    other = ClockLoop()
    other.now = 7.0
    deadline._loop = other
    deadline.arm(1.0)
    assert deadline._loop is other and deadline.last == 7.0 and other.timers[0].when() == 8.0
    assert loop.timers == []


def test_an_expiry_that_raises_propagates(make):
    loop = ClockLoop()
    deadline = type(make[1])(loop, lambda: 1 / 0)
    deadline.arm(1.0)
    loop.now = 101.0
    with pytest.raises(ZeroDivisionError):
        loop.run_due()


@pytest.mark.parametrize("version", VERSIONS)
def test_an_owner_and_its_deadline_in_a_cycle_are_collected(version):
    class Owner:
        def __init__(self, loop):
            self.deadline = version(loop, self.expire)

        def expire(self):
            pass

    owner = Owner(ClockLoop())
    owner.deadline.arm(5.0)  # the timer holds the deadline; the deadline, the owner
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None


@pytest.mark.anyio
@pytest.mark.parametrize("version", VERSIONS)
async def test_on_the_event_loop_it_expires_after_the_last_touch(version):
    loop = asyncio.get_running_loop()
    expired = asyncio.Event()
    deadline = version(loop, expired.set)
    deadline.arm(0.05)
    await asyncio.sleep(0.03)  # activity before the timeout: the point of the test
    touched = loop.time()
    deadline.touch()
    await asyncio.wait_for(expired.wait(), 5)
    assert loop.time() >= touched + 0.05 - 0.0015  # uvloop fires up to ~1 ms early


def test_the_c_version_serves_where_it_was_built():
    c_version = speedups.native("Deadline")
    assert timers.Deadline is (timers.PyDeadline if speedups.PURE_PYTHON or c_version is None
                               else c_version)


@pytest.mark.parametrize("version", VERSIONS)
def test_it_is_made_by_position_or_by_keyword_and_refuses_a_wrong_call(version):
    loop = ClockLoop()
    for deadline in (version(loop, print), version(loop, on_expire=print),
                     version(loop=loop, on_expire=print)):
        assert deadline._loop is loop and deadline._on_expire is print
    with pytest.raises(TypeError):
        version(loop)
    with pytest.raises(TypeError):
        version(loop, print, 3)
