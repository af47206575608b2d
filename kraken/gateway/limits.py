"""In-memory per-key request limits (the embedded default; Redis takes over on many hosts).

A fixed one-minute window per key: O(1) per request, bounded by the number of keys.
"""
from __future__ import annotations

import time

from kraken import metrics
from kraken.errors import RateLimited
from kraken.gateway.auth import Principal


class LocalLimiter:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._windows: dict[str, list[float | int]] = {}

    def check(self, principal: Principal) -> None:
        """Count one request for the key, or raise RateLimited with the wait in seconds."""
        limit = principal.rpm
        if limit <= 0:
            return
        now = self._clock()
        window = self._windows.get(principal.key_id)
        if window is None or now - window[0] >= 60.0:
            self._windows[principal.key_id] = [now, 1]
            return
        if window[1] >= limit:
            metrics.RATE_LIMITED.labels("key_rpm").inc()
            raise RateLimited(
                f"Rate limit reached: {limit} requests per minute for this key",
                retry_after_s=max(1, int(60.0 - (now - window[0])) + 1),
                limit=limit,
            )
        window[1] += 1

    def forget(self, key_id: str) -> None:
        self._windows.pop(key_id, None)
