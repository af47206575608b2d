"""Per-provider circuit breaker: CLOSED -> OPEN -> HALF_OPEN -> CLOSED | OPEN (injected clock)."""
from __future__ import annotations

import pytest

from kraken import metrics
from kraken.policy.breaker import CLOSED, HALF_OPEN, OPEN, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("kraken_circuit_state", {"provider": name})


def test_opens_after_n_consecutive_failures(clock):
    b = Breaker("br_consec", failures=3, failure_rate=0, cooldown_s=10, clock=clock)
    b.failure(), b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN
    assert not b.allow()
    assert gauge("br_consec") == 2


def test_a_success_resets_the_consecutive_count(clock):
    b = Breaker("br_reset", failures=3, failure_rate=0, clock=clock)
    for _ in range(5):
        b.failure(), b.failure(), b.success()
    assert b.state == CLOSED


def test_opens_on_failure_rate_only_after_min_requests(clock):
    b = Breaker("br_rate", failures=0, failure_rate=0.5, min_requests=10, clock=clock)
    seen = []
    for _ in range(6):  # two failures in three: never 3 in a row, rate well above 0.5
        for outcome in (b.failure, b.failure, b.success):
            outcome()
            seen.append(b.state)
    assert seen[:9] == [CLOSED] * 9, "not before min_requests outcomes"
    assert b.state == OPEN


def test_half_open_lets_exactly_one_probe_through_after_the_cooldown(clock):
    b = Breaker("br_probe", failures=1, cooldown_s=30, clock=clock)
    b.failure()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow(), "the probe"
    assert b.state == HALF_OPEN and gauge("br_probe") == 1
    assert not b.allow(), "only one probe at a time"
    b.success()
    assert b.state == CLOSED and gauge("br_probe") == 0
    assert b.allow() and b.allow()


def test_a_failed_probe_reopens_and_restarts_the_cooldown(clock):
    b = Breaker("br_reopen", failures=1, cooldown_s=30, clock=clock)
    b.failure()
    clock.now += 30
    assert b.allow()
    b.failure()
    assert b.state == OPEN
    clock.now += 29
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_an_abandoned_probe_is_released(clock):
    b = Breaker("br_release", failures=1, cooldown_s=30, clock=clock)
    b.failure()
    clock.now += 30
    assert b.allow()
    b.release()  # the client went away mid-probe
    assert b.allow(), "another request may probe"


def test_a_probe_that_never_reports_is_replaced_after_another_cooldown(clock):
    b = Breaker("br_stuck", failures=1, cooldown_s=30, clock=clock)
    b.failure()
    clock.now += 30
    assert b.allow()
    clock.now += 29
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_transitions_are_counted(clock):
    b = Breaker("br_count", failures=1, cooldown_s=1, clock=clock)
    b.failure()
    clock.now += 1
    b.allow()
    b.success()
    for state in (OPEN, HALF_OPEN, CLOSED):
        assert metrics.REGISTRY.get_sample_value(
            "kraken_circuit_transitions_total", {"provider": "br_count", "state": state}) == 1


def test_retry_after_counts_down_to_the_probe_then_waits_one_second_for_its_outcome(clock):
    b = Breaker("br_retry_after", failures=1, cooldown_s=30, clock=clock)
    b.failure()
    assert b.retry_after_s() == 30
    clock.now += 12.5
    assert b.retry_after_s() == 18  # rounded up: never earlier than the probe
    clock.now += 17.9
    assert b.retry_after_s() == 1
    clock.now += 0.2
    assert b.allow()  # the probe is in flight
    assert not b.allow() and b.retry_after_s() == 1
