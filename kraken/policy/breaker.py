"""A circuit breaker per provider: stop sending traffic to a provider that keeps failing,
then let a single probe find out whether it is back.

    CLOSED ──N consecutive failures, or failure rate ≥ R over ≥ M requests──▶ OPEN
    OPEN ──cooldown elapsed, next allow()──▶ HALF_OPEN (exactly one probe goes through)
    HALF_OPEN ──probe succeeded──▶ CLOSED
    HALF_OPEN ──probe failed──▶ OPEN (cooldown starts again)

Every call is O(1) and does no I/O. A probe abandoned without an outcome (the client went
away) is released; a probe that never reports is replaced after another cooldown.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

from kraken import metrics
from kraken.errors import UpstreamError

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
GAUGE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

TRANSITIONS = {
    (CLOSED, "trip"): OPEN,
    (OPEN, "cooldown"): HALF_OPEN,
    (HALF_OPEN, "success"): CLOSED,
    (HALF_OPEN, "failure"): OPEN,
}
"""The only legal state changes; anything else is a bug (KeyError)."""


class CircuitOpen(UpstreamError):
    """Every candidate's breaker is open: refuse fast instead of waiting on a dead provider."""

    status = 503
    error_type = "circuit_open"
    code = "circuit_open"

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Retry-After: when a probe may go through, so SDKs wait for it instead of spending
        their retries (each a recorded 503) on their own backoff."""
        return [(b"retry-after", str(self.retry_after_s).encode())]


class Breaker:
    """The breaker of one provider."""

    __slots__ = (
        "_alpha",
        "_gauge",
        "clock",
        "consecutive",
        "cooldown_s",
        "count",
        "failure_rate",
        "failures",
        "min_requests",
        "name",
        "opened_at",
        "probe_at",
        "rate",
        "state",
    )

    def __init__(self, name: str, *, failures: int = 5, failure_rate: float = 0.5,
                 min_requests: int = 20, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.state = CLOSED
        self.consecutive = 0
        self.rate = 0.0
        """Failure rate, an EWMA over roughly the last ``min_requests`` outcomes."""
        self.count = 0
        self.opened_at = 0.0
        self.probe_at: float | None = None
        """When the half-open probe was let through (None: no probe in flight)."""
        self.failures = failures
        self.failure_rate = failure_rate
        self.min_requests = max(1, min_requests)
        self._alpha = 1 / self.min_requests
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._gauge = metrics.CIRCUIT_STATE.labels(name)
        self._gauge.set(0)

    def allow(self) -> bool:
        """May a request go to this provider now? In HALF_OPEN only the one probe may."""
        state = self.state
        if state is CLOSED:
            return True
        now = self.clock()
        if state is OPEN:
            if now - self.opened_at < self.cooldown_s:
                return False
            self._move("cooldown")
        if self.probe_at is not None and now - self.probe_at < self.cooldown_s:
            return False
        self.probe_at = now
        return True

    def success(self) -> None:
        if self.state is HALF_OPEN:
            self._move("success")
        self.consecutive = 0
        self.count += 1
        self.rate *= 1 - self._alpha

    def failure(self) -> None:
        if self.state is HALF_OPEN:
            self._move("failure")
            return
        if self.state is OPEN:
            return  # a request let through before the trip reported late
        self.consecutive += 1
        self.count += 1
        self.rate += self._alpha * (1 - self.rate)
        if (self.failures and self.consecutive >= self.failures) or (
            self.failure_rate and self.count >= self.min_requests
            and self.rate >= self.failure_rate
        ):
            self._move("trip")

    def retry_after_s(self) -> int:
        """Whole seconds (at least 1) until this breaker lets a request through: the end of
        the cooldown when open; 1 while a half-open probe is in flight (its outcome is near)."""
        if self.state is CLOSED or self.probe_at is not None:
            return 1
        left = self.opened_at + self.cooldown_s - self.clock() if self.state is OPEN else 0.0
        return max(1, math.ceil(left))

    def release(self) -> None:
        """The request let through ended without an outcome (cancelled): free the probe."""
        if self.state is HALF_OPEN:
            self.probe_at = None

    def _move(self, event: str) -> None:
        self.state = TRANSITIONS[(self.state, event)]
        self.probe_at = None
        if self.state is OPEN:
            self.opened_at = self.clock()
        elif self.state is CLOSED:
            self.consecutive, self.count, self.rate = 0, 0, 0.0
        self._gauge.set(GAUGE_VALUE[self.state])
        metrics.CIRCUIT_TRANSITIONS.labels(self.name, self.state).inc()


class Breakers:
    """One breaker per configured provider, created up front (a bounded set)."""

    def __init__(self, providers, **settings):
        self._by_name = {name: Breaker(name, **settings) for name in providers}

    def __getitem__(self, provider: str) -> Breaker:
        return self._by_name[provider]

    def get(self, provider: str) -> Breaker | None:
        return self._by_name.get(provider)
