"""Rate limits shared by every worker process and host, kept in Redis.

Each operation is one Lua script (``redis_scripts``) run with EVALSHA, so a check and its count
are atomic on the server: N requests per window are admitted exactly, however many workers ask
at once. Every key gets its expiry in the script that creates it, so no counter outlives its
window (a limit can never become a permanent ban) and a crashed worker's concurrency slots
free themselves ``lease_s`` after they were taken.

Keys (``prefix`` defaults to ``kraken:rl:``; the ``{key id}`` hash tag keeps one key's three
counters in one Redis Cluster slot)::

    <prefix>k:{<key id>}:r   requests in the current window       PEXPIRE window_s
    <prefix>k:{<key id>}:t   tokens charged in the current window  PEXPIRE window_s
    <prefix>k:{<key id>}:c   concurrency slots (sorted set)        PEXPIRE lease_s
    <prefix>ip:{<hmac>}      failed authentications of an address  PEXPIRE ip_window_s <= 3600 s
    <prefix>ip:{<hmac>}:a    its attempts in flight (sorted set)    PEXPIRE ATTEMPT_HOLD_S

Client addresses (privacy policy: "IP addresses stored temporarily in Redis for rate limiting;
automatically expires after 1 hour"): Redis never holds a raw address. The key is
HMAC-SHA256(ip_salt, address bucket) truncated to 128 bits, hex; the value is a count. Without
the secret salt the key cannot be turned back into an address - an unsalted hash could, by
hashing all 2^32 IPv4 addresses - and it is usable only to find the same address's counter
again. The salt must be the same on every host of a deployment (or the hosts count apart);
changing it only resets the counters. The key expires ``ip_window_s`` (at most one hour) after
the address's first failure in the window.

When Redis is unreachable or slower than ``timeout_s``: ``fail_open=True`` serves the request
without limits (``Lease.degraded``), ``fail_open=False`` refuses it with ``errors.Overloaded``
(503). After ``TRIP_AFTER`` consecutive failures Redis is not asked again for ``retry_s``, so
a hung Redis costs the hot path one timeout per ``retry_s``, not one per request. Each request
served or refused that way calls ``on_unavailable(op)`` (wire it to a counter); the start and
end of an outage are logged once each. ``release``, ``auth_failure`` and ``auth_done`` never
raise. A release that failed is kept (up to ``RELEASE_BACKLOG``) and sent again once Redis
answers, so a short outage does not hold a key's concurrency slots for the whole ``lease_s``;
so is the release of the slot of an acquire that went unanswered or was cancelled (Redis may
still run it).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections import deque
from typing import Any, Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from kraken.errors import Overloaded
from kraken.policy import redis_scripts
from kraken.policy.ratelimit import (
    AuthAttempt, Lease, LimitPolicy, ip_bucket, limits_for, refuse, retry_after,
)

log = logging.getLogger("kraken.policy.ratelimit")

TRIP_AFTER = 3
"""Consecutive Redis failures after which Redis is skipped for ``retry_s``."""

MIN_SALT_BYTES = 16

RELEASE_BACKLOG = 10_000
"""Failed releases kept for a retry after an outage; beyond that, slots wait for their lease."""

ATTEMPT_HOLD_S = 60.0
"""An authentication attempt not given back (a crashed worker) frees itself after this: longer
than a full bcrypt queue takes to drain (64 queued runs per thread at ~0.3 s each: ~20 s)."""


class _Unavailable(Exception):
    """Redis did not answer in time (or is skipped after repeated failures)."""


class _Skipped(_Unavailable):
    """Redis was not asked at all (skipped after repeated failures): nothing reached it."""


class RedisLimiter:
    """``Limiter`` on Redis: exact across processes and hosts."""

    def __init__(
        self,
        url: str,
        *,
        ip_salt: bytes | str,
        policy: LimitPolicy = LimitPolicy(),
        fail_open: bool = True,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        max_connections: int = 32,
        prefix: str = "kraken:rl:",
        on_unavailable: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        salt = ip_salt.encode() if isinstance(ip_salt, str) else bytes(ip_salt)
        if len(salt) < MIN_SALT_BYTES:
            raise ValueError(f"limits.ip_salt must be a secret of at least {MIN_SALT_BYTES} bytes")
        if timeout_s <= 0 or retry_s < 0:
            raise ValueError("limits.redis_timeout_s must be > 0 and limits.redis_retry_s >= 0")
        self.policy = policy
        self.fail_open = fail_open
        self._salt = salt
        self._prefix = prefix
        self._window_ms = int(policy.window_s * 1000)
        self._lease_ms = int(policy.lease_s * 1000)
        self._ip_window_ms = int(policy.ip_window_s * 1000)
        # Connect, send, read and wait-for-a-pooled-connection each bounded by timeout_s, no
        # retries (redis-py's default retries with backoff for seconds); the whole call is
        # bounded again below, since a call may need a connect and a command.
        self._op_timeout = 2 * timeout_s
        self._pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = Redis(connection_pool=self._pool)
        self._acquire = self._redis.register_script(redis_scripts.ACQUIRE)
        self._release = self._redis.register_script(redis_scripts.RELEASE)
        self._auth_failure = self._redis.register_script(redis_scripts.AUTH_FAILURE)
        self._check_ip = self._redis.register_script(redis_scripts.CHECK_IP)
        self._auth_attempt = self._redis.register_script(redis_scripts.AUTH_ATTEMPT)
        self._auth_done = self._redis.register_script(redis_scripts.AUTH_DONE)
        # Slot ids unique across workers and hosts without a syscall per request.
        self._slot_prefix = secrets.token_hex(6) + ":"
        self._slot_ids = itertools.count(1)
        self._on_unavailable = on_unavailable
        self._clock = clock
        self._retry_s = retry_s
        self._failures = 0
        self._skip_until = 0.0
        self._outage = False
        self._unreleased: deque[tuple[list[str], list[Any]]] = deque(maxlen=RELEASE_BACKLOG)
        self._drain_task: asyncio.Task | None = None

    # ---- plumbing --------------------------------------------------------------------------
    def ip_key(self, ip: str) -> str:
        """The Redis key for ``ip``'s failure count: a keyed hash, never the address. Its hash
        tag keeps the address's attempts (``ip_key(ip) + ":a"``) in the same Cluster slot."""
        bucket = ip_bucket(ip, self.policy.ipv6_prefix)
        digest = hmac.new(self._salt, bucket.encode(), hashlib.sha256).digest()[:16]
        return f"{self._prefix}ip:{{{digest.hex()}}}"

    def _key_keys(self, key_id: str) -> tuple[str, str, str]:
        base = f"{self._prefix}k:{{{key_id}}}:"
        return base + "r", base + "t", base + "c"

    async def _run(self, op: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        if self._failures >= TRIP_AFTER and self._clock() < self._skip_until:
            self._unavailable(op)
            raise _Skipped
        try:
            async with asyncio.timeout(self._op_timeout):
                result = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(op, exc)
            raise _Unavailable from exc
        if self._failures:
            self._recovered()
        if self._unreleased and self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        return result

    def _failed(self, op: str, exc: BaseException) -> None:
        self._failures += 1
        if self._failures >= TRIP_AFTER:
            self._skip_until = self._clock() + self._retry_s
        if not self._outage:
            self._outage = True
            log.warning("rate-limit store unreachable (%s: %s: %s); %s until it answers",
                        op, type(exc).__name__, exc,
                        "serving without limits" if self.fail_open else "refusing with 503")
        self._unavailable(op)

    def _recovered(self) -> None:
        if self._outage:
            log.warning("rate-limit store answers again after %d failed calls", self._failures)
        self._failures = 0
        self._outage = False

    async def _drain(self) -> None:
        """Send the releases that failed during an outage, oldest first, until one fails."""
        try:
            while self._unreleased:
                keys, args = self._unreleased.popleft()
                try:
                    await self._run("release", self._release, keys, args)
                except _Unavailable:
                    self._unreleased.appendleft((keys, args))
                    return
        finally:
            self._drain_task = None

    def _unavailable(self, op: str) -> None:
        if self._on_unavailable is not None:
            self._on_unavailable(op)

    def _overloaded(self) -> Overloaded:
        return Overloaded("Rate limiting is unavailable; retry shortly")

    # ---- Limiter ---------------------------------------------------------------------------
    @staticmethod
    def acquire_now(principal: Any) -> None:
        """Redis decides: always await ``acquire``."""
        return None

    async def acquire(self, principal: Any, *, tokens: int = 0) -> Lease:
        limits = limits_for(principal, self.policy)
        key_id = principal.key_id
        if not limits.any:
            return Lease(key_id)
        rpm, tpm, max_conc = limits.rpm, limits.tpm, limits.max_concurrent
        slot = f"{self._slot_prefix}{next(self._slot_ids):x}" if max_conc > 0 else None
        try:
            code, a, b = await self._run(
                "acquire", self._acquire, list(self._key_keys(key_id)),
                [rpm, tpm, max_conc, max(tokens, 0), self._window_ms, self._lease_ms, slot or ""],
            )
        except asyncio.CancelledError:  # the client left mid-call: the script may still run
            if slot is not None:
                self._give_back(key_id, slot)
            raise
        except _Unavailable as exc:
            if slot is not None and not isinstance(exc, _Skipped):
                self._give_back(key_id, slot)
            if self.fail_open:
                return Lease(key_id, None, 0, degraded=True)
            raise self._overloaded() from None
        window = self.policy.window_s
        if code == 0:
            if rpm > 0:
                return Lease(key_id, slot, tpm, rpm, max(0, int(a)),
                             retry_after(int(b) / 1000, window))
            return Lease(key_id, slot, tpm)
        if code == 1:
            raise refuse("key_rpm", limit=rpm, window_s=window,
                         retry_after_s=retry_after(int(a) / 1000, window))
        if code == 2:
            raise refuse("key_tpm", limit=tpm, window_s=window, remaining=max(0, tpm - int(b)),
                         retry_after_s=retry_after(int(a) / 1000, window))
        raise refuse("key_concurrency", limit=max_conc, window_s=window, retry_after_s=1)

    def _give_back(self, key_id: str, slot: str) -> None:
        """An acquire sent but not answered may still run (a hung Redis reads it on resuming,
        after the caller gave up or left): queue the release of its slot, or no lease frees it."""
        _, tkey, ckey = self._key_keys(key_id)
        self._unreleased.append(([ckey, tkey], [slot, 0, self._window_ms]))

    async def release(self, lease: Lease, *, tokens_used: int) -> None:
        charge = tokens_used if lease.tpm > 0 and tokens_used > 0 else 0
        if lease.degraded or (lease.slot is None and not charge):
            return
        _, tkey, ckey = self._key_keys(lease.key_id)
        keys, args = [ckey, tkey], [lease.slot or "", charge, self._window_ms]
        try:
            await self._run("release", self._release, keys, args)
        except _Unavailable:
            self._unreleased.append((keys, args))  # sent again once Redis answers

    async def check_ip(self, ip: str) -> None:
        limit = self.policy.ip_auth_failures
        if limit <= 0:
            return
        try:
            refused, ms = await self._run("check_ip", self._check_ip, [self.ip_key(ip)],
                                          [limit, self._ip_window_ms])
        except _Unavailable:
            if self.fail_open:
                return
            raise self._overloaded() from None
        if refused:
            window = self.policy.ip_window_s
            raise refuse("ip_auth", limit=limit, window_s=window,
                         retry_after_s=retry_after(int(ms) / 1000, window))

    async def auth_failure(self, ip: str) -> None:
        if self.policy.ip_auth_failures <= 0:
            return
        try:
            await self._run("auth_failure", self._auth_failure, [self.ip_key(ip)],
                            [self._ip_window_ms])
        except _Unavailable:
            pass

    async def auth_attempt(self, ip: str) -> AuthAttempt:
        limit = self.policy.ip_auth_failures
        if limit <= 0:
            return AuthAttempt(ip)
        key = self.ip_key(ip)
        slot = f"{self._slot_prefix}{next(self._slot_ids):x}"
        try:
            refused, ms = await self._run(
                "auth_attempt", self._auth_attempt, [key, key + ":a"],
                [limit, self._ip_window_ms, slot, int(ATTEMPT_HOLD_S * 1000)])
        except _Unavailable:
            if self.fail_open:
                return AuthAttempt(ip)
            raise self._overloaded() from None
        if refused:
            window = self.policy.ip_window_s
            raise refuse("ip_auth", limit=limit, window_s=window,
                         retry_after_s=retry_after(int(ms) / 1000, window))
        return AuthAttempt(ip, slot)

    async def auth_done(self, attempt: AuthAttempt, *, failed: bool) -> None:
        # A give-back lost to an outage is not retried: the attempt expires (ATTEMPT_HOLD_S).
        if self.policy.ip_auth_failures <= 0 or (attempt.slot is None and not failed):
            return
        key = self.ip_key(attempt.ip)
        try:
            await self._run("auth_done", self._auth_done, [key, key + ":a"],
                            [attempt.slot or "", 1 if failed else 0, self._ip_window_ms])
        except _Unavailable:
            pass

    async def aclose(self) -> None:
        task = self._drain_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose(close_connection_pool=True)

