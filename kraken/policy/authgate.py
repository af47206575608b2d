"""The per-address authentication limits of one request, shared by every listener that checks
API keys (the client listener and the admin usage page) through one ``Limiter``.

Before a key that is not cached is checked, ``check`` refuses an address that already failed
``[limits] ip_auth_failures`` times in the window (429). The key verifier then calls
``attempt`` before it starts a bcrypt run, ``done`` when the run ends, and ``failed`` for a
refusal that ran no bcrypt of its own (malformed key, unknown id, a shared run) - so failures
and attempts in flight together stay within the limit however many requests arrive at once.
"""
from __future__ import annotations

import asyncio

from kraken.policy.ratelimit import AuthAttempt, Limiter, ip_bucket

_settling: set[asyncio.Task] = set()
"""Give-backs under way (``done`` is called from a run's done callback, so it cannot await)."""


class AddressGate:
    """``AttemptGate`` (kraken/policy/bcrypt_pool.py) for one client address."""

    __slots__ = ("_limiter", "_ip", "bucket")

    def __init__(self, limiter: Limiter, ip: str):
        self._limiter = limiter
        self._ip = ip
        self.bucket = ip_bucket(ip, limiter.policy.ipv6_prefix)

    async def check(self) -> None:
        """Raise ``RateLimitExceeded`` if the address failed too often in the window."""
        await self._limiter.check_ip(self._ip)

    async def attempt(self) -> AuthAttempt:
        return await self._limiter.auth_attempt(self._ip)

    def done(self, attempt: AuthAttempt, *, failed: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            self._limiter.auth_done(attempt, failed=failed))
        _settling.add(task)
        task.add_done_callback(_settling.discard)

    async def failed(self) -> None:
        await self._limiter.auth_failure(self._ip)
