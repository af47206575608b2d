"""Load shedding made visible: every refusal for overload is counted by reason and logged,
at most once per interval per reason, so an operator sees shedding without a log flood.

Reasons are a fixed set (``REASONS``): never client text. Call ``refused(reason)`` where a
request or connection is turned away because a bound was hit.
"""
from __future__ import annotations

import logging
import time

from kraken import metrics

log = logging.getLogger("kraken.shedding")

REASONS = ("queue_full", "journal_failed", "shutting_down", "per_ip_connections",
           "pool_exhausted", "bcrypt_pool", "key_concurrency", "stream_limit")
"""Every reason label ``kraken_refused_total`` may carry."""

LOG_INTERVAL_S = 10.0
"""At most one log line per reason this often; it names how many were refused since."""

_last_logged: dict[str, float] = {}
_since_logged: dict[str, int] = {}


def refused(reason: str) -> None:
    """Count one refusal for ``reason`` and log it, rate-limited."""
    if reason not in REASONS:
        raise ValueError(f"unknown refusal reason {reason!r}")
    metrics.refused_for(reason).inc()
    count = _since_logged.get(reason, 0) + 1
    now = time.monotonic()
    last = _last_logged.get(reason)
    if last is not None and now - last < LOG_INTERVAL_S:
        _since_logged[reason] = count
        return
    _last_logged[reason] = now
    _since_logged[reason] = 0
    log.warning("refusing requests: %s (%d since the last line)", reason, count)
