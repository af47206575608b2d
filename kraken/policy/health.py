"""Live health of each (provider, model): exponentially weighted moving averages of time to
first byte and of the error rate, fed from the hot path.

One update is a dict lookup and two multiply-adds: no I/O, no lock, no allocation after the
route is known. Only routes named in the configuration are tracked (``track``), so the table is
bounded by the operator's config, never by what clients send (``provider/anything``).

An avoided route gets no traffic and so no new samples; its error rate therefore decays toward
zero with a half-life of ``recovery_s`` (applied when read), which gives it another chance.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from kraken import metrics


class RouteHealth:
    """The moving averages of one (provider, model)."""

    __slots__ = ("_error_gauge", "_ttfb_gauge", "error_rate", "samples", "ttfb_ms", "updated")

    def __init__(self, provider: str, model: str):
        self.ttfb_ms: float | None = None
        """EWMA of the provider's time to first byte (None until a success was seen)."""
        self.error_rate = 0.0
        """EWMA of failures (1) and successes (0), as stored at ``updated``."""
        self.samples = 0
        self.updated = 0.0
        self._ttfb_gauge = metrics.ROUTE_TTFB_EWMA.labels(provider, model)
        self._error_gauge = metrics.ROUTE_ERROR_RATE_EWMA.labels(provider, model)


class HealthBoard:
    """EWMA health per configured (provider, model); ``clock`` is injectable for tests."""

    def __init__(self, *, alpha: float = 0.2, recovery_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._keep = 1 - alpha
        """What an update keeps of the old average."""
        self.recovery_s = recovery_s
        self.clock = clock
        self._routes: dict[tuple[str, str], RouteHealth] = {}

    def track(self, routes: Iterable[tuple[str, str]]) -> None:
        """Start tracking these (provider, model) pairs (done once, at startup)."""
        for key in routes:
            if key not in self._routes:
                self._routes[key] = RouteHealth(*key)
        metrics.ROUTE_HEALTH_ENTRIES.set(len(self._routes))

    def success(self, provider: str, model: str, ttfb_ms: float | None) -> None:
        """A request answered; ``ttfb_ms`` is the provider's time to first byte."""
        h = self._routes.get((provider, model))
        if h is None:
            return
        now = self.clock()
        rate = h.error_rate
        if rate:  # a healthy route's rate stays 0.0: no decay to work out
            rate = self._decayed(h, now) * self._keep
        h.error_rate = rate
        if ttfb_ms is not None:
            ewma = h.ttfb_ms
            h.ttfb_ms = ewma = ttfb_ms if ewma is None else ewma + self.alpha * (ttfb_ms - ewma)
            h._ttfb_gauge.set(ewma / 1000)
        h.samples += 1
        h.updated = now
        h._error_gauge.set(rate)

    def failure(self, provider: str, model: str) -> None:
        """A request failed at this route (connect error, timeout, 429, 5xx, broken stream)."""
        h = self._routes.get((provider, model))
        if h is None:
            return
        now = self.clock()
        a = self.alpha
        h.error_rate = self._decayed(h, now) * (1 - a) + a
        h.samples += 1
        h.updated = now
        h._error_gauge.set(h.error_rate)

    def snapshot(self, provider: str, model: str) -> tuple[float | None, float]:
        """(ttfb EWMA in ms or None, error rate now) of a route; (None, 0.0) if untracked."""
        h = self._routes.get((provider, model))
        if h is None:
            return None, 0.0
        return h.ttfb_ms, self._decayed(h, self.clock())

    def _decayed(self, h: RouteHealth, now: float) -> float:
        if not h.error_rate or self.recovery_s <= 0:
            return h.error_rate
        idle = now - h.updated
        if idle <= 0:
            return h.error_rate
        return h.error_rate * math.exp2(-idle / self.recovery_s)
