"""Rate limits: the ``Limiter`` interface and its in-memory implementation.

Per API key, three limits, each 0 = unlimited:

* ``rpm`` - requests per window (one minute): a fixed window that starts with the key's first
  request and lasts ``window_s``; exact, O(1), and never extended by refused requests.
* ``tpm`` - tokens per window: ``acquire(tokens=estimate)`` is a pre-check against the tokens
  already charged; the actual usage is charged by ``release(lease, tokens_used=...)`` when the
  response ends. Requests in flight are not reserved against the budget (their size is only
  known at the end), so concurrent requests may overshoot it by their own usage - as with
  OpenAI's TPM - and the next window absorbs that.
* ``max_concurrent`` - requests in flight: ``acquire`` takes a slot that ``release`` frees. A
  slot not released (a crashed worker, a lost lease) frees itself after ``lease_s``.

Limits come from the principal (``rpm``, ``tpm``, ``max_concurrent`` attributes, read with
``getattr`` so a ``Principal`` without them works): a positive value wins, 0 or a missing
attribute falls back to the ``LimitPolicy`` default.

Per client address, failed authentications are counted (``auth_failure``) and checked
(``check_ip``) before bcrypt runs, so random keys from one address cannot burn CPU. Each bcrypt
run also holds an attempt (``auth_attempt`` ... ``auth_done``): attempts in flight plus recent
failures stay within ``ip_auth_failures``, so sending many keys at once cannot outrun the
failure count. IPv6 addresses are grouped by /64 (one host usually owns a whole /64);
IPv4-mapped IPv6 counts as IPv4.

Refusals raise ``RateLimitExceeded`` (a ``RateLimited``, so a 429) with ``retry_after_s`` (a
positive int, at most the window) and a ``scope`` from ``SCOPES``, also the label of
``kraken_rate_limited_total``.

``MemoryLimiter`` is exact within one process (no await between check and count) and bounded:
expired windows are swept as new ones start and the number of tracked keys and addresses is
capped (oldest first); a timer also forgets an address when its window ends and a key when
it has been idle for a window and a lease (the sign-up limiter's keys are hashed addresses).
``kraken.policy.redis_limits.RedisLimiter`` is exact across processes and hosts.
"""
from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from kraken import metrics
from kraken.config.fields import check_limit_values
from kraken.errors import RateLimited

SCOPES = ("key_rpm", "key_tpm", "key_concurrency", "ip_auth")

"""The privacy policy: rate-limit data about an IP address expires within one hour."""

_REFUSED = {scope: metrics.RATE_LIMITED.labels(scope) for scope in SCOPES}


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Defaults and windows shared by every limiter implementation (config section ``[limits]``)."""

    rpm: int = 0
    """Requests per window for keys that set none; 0 = unlimited."""
    tpm: int = 0
    """Tokens per window for keys that set none; 0 = unlimited."""
    max_concurrent: int = 0
    """Requests in flight per key for keys that set none; 0 = unlimited."""
    window_s: float = 60.0
    """Length of the request and token windows (60 = per minute)."""
    lease_s: float = 600.0
    """A concurrency slot not released within this time frees itself. Longer than the longest
    stream you serve, or a long stream stops counting against the key."""
    ip_auth_failures: int = 20
    """Failed authentications per client address per ``ip_window_s`` before 429; 0 = off."""
    ip_window_s: float = 60.0
    """Window of the failure count; at most 3600 s (the privacy policy's one hour)."""
    ipv6_prefix: int = 64
    """IPv6 addresses are counted per network of this prefix length."""

    def __post_init__(self) -> None:
        check_limit_values(self)
        if not 0 < self.ipv6_prefix <= 128:
            raise ValueError("limits.ipv6_prefix must be between 1 and 128")


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that apply to one principal (0 = unlimited)."""

    rpm: int
    tpm: int
    max_concurrent: int

    @property
    def any(self) -> bool:
        return self.rpm > 0 or self.tpm > 0 or self.max_concurrent > 0


def limits_for(principal: Any, policy: LimitPolicy) -> Limits:
    """The principal's own positive limits, else the policy's defaults."""
    return Limits(
        getattr(principal, "rpm", 0) or policy.rpm,
        getattr(principal, "tpm", 0) or policy.tpm,
        getattr(principal, "max_concurrent", 0) or policy.max_concurrent,
    )


@dataclass(slots=True)  # not frozen: see kraken/http/exchange.py Request
class Lease:
    """What ``acquire`` granted; hand it back to ``release`` exactly once when the response ends."""

    key_id: str
    slot: str | None = None
    """The concurrency slot to free; None when the key has no concurrency limit."""
    tpm: int = 0
    """The key's token budget when acquired: release charges tokens only if it is > 0."""
    limit_requests: int = 0
    remaining_requests: int = 0
    reset_requests_s: int = 0
    degraded: bool = False
    """Admitted without the shared store (it was unreachable and the limiter fails open)."""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """``x-ratelimit-*-requests`` headers for a successful response (none when unlimited)."""
        if self.limit_requests <= 0 or self.degraded:
            return []
        return [
            (b"x-ratelimit-limit-requests", str(self.limit_requests).encode()),
            (b"x-ratelimit-remaining-requests", str(self.remaining_requests).encode()),
            (b"x-ratelimit-reset-requests", f"{self.reset_requests_s}s".encode()),
        ]


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """What ``auth_attempt`` granted; hand it back to ``auth_done`` exactly once."""

    ip: str
    slot: str | None = None
    """The attempt held; None when nothing is held (limit off, or the store is unreachable
    and the limiter fails open)."""


class RateLimitExceeded(RateLimited):
    """A 429 that knows which limit refused it, so headers and the metric can say so."""

    def __init__(self, message: str, *, scope: str, retry_after_s: int, limit: int,
                 remaining: int = 0):
        super().__init__(message, retry_after_s=retry_after_s, limit=limit)
        self.scope = scope
        self.remaining = remaining

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.scope == "key_rpm":
            return super().headers
        retry = str(self.retry_after_s).encode()
        if self.scope == "key_tpm":
            return [
                (b"retry-after", retry),
                (b"x-ratelimit-limit-tokens", str(self.limit).encode()),
                (b"x-ratelimit-remaining-tokens", str(self.remaining).encode()),
                (b"x-ratelimit-reset-tokens", retry + b"s"),
            ]
        return [(b"retry-after", retry)]


def retry_after(remaining_s: float, window_s: float) -> int:
    """Seconds to wait as Retry-After: a positive int, never more than the window."""
    return max(1, min(math.ceil(remaining_s), math.ceil(window_s)))


def _per(window_s: float) -> str:
    return "per minute" if window_s == 60.0 else f"per {window_s:g} s"


def refuse(scope: str, *, limit: int, retry_after_s: int, window_s: float,
           remaining: int = 0) -> RateLimitExceeded:
    """The exception for a refusal, counted in ``kraken_rate_limited_total{scope}``."""
    _REFUSED[scope].inc()
    if scope == "key_rpm":
        msg = f"Rate limit reached: {limit} requests {_per(window_s)} for this key"
    elif scope == "key_tpm":
        msg = f"Rate limit reached: {limit} tokens {_per(window_s)} for this key"
    elif scope == "key_concurrency":
        msg = (f"Too many concurrent requests for this key (limit {limit}); "
               "retry when one finishes")
    else:
        msg = "Too many failed authentication attempts from this address; retry later"
    return RateLimitExceeded(msg, scope=scope, retry_after_s=retry_after_s, limit=limit,
                             remaining=remaining)


def ip_bucket(ip: str, ipv6_prefix: int = 64) -> str:
    """The unit an address is counted in: the IPv4 address, or its IPv6 /``ipv6_prefix``."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]  # not an address (e.g. a unix socket peer): count it as given, bounded
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        net = ipaddress.IPv6Network((int(addr) >> (128 - ipv6_prefix) << (128 - ipv6_prefix),
                                     ipv6_prefix))
        return str(net)
    return str(addr)


class Limiter(Protocol):
    """What the pipeline needs from a rate limiter (in memory or Redis)."""

    policy: LimitPolicy

    def acquire_now(self, principal: Any) -> Lease | None:
        """``acquire`` decided from memory without waiting, or None: await ``acquire``. The
        pipeline asks this first: awaiting a coroutine that never waits costs a coroutine
        object, its frame and a send (~0.1-0.2 us each on 3.11) for nothing."""
        ...

    async def acquire(self, principal: Any, *, tokens: int = 0) -> Lease:
        """Count one request, pre-check ``tokens`` against the token budget, take a concurrency
        slot; or raise ``RateLimitExceeded`` (``errors.Overloaded`` if the store is down and
        the limiter fails closed)."""
        ...

    async def release(self, lease: Lease, *, tokens_used: int) -> None:
        """Free the lease's slot and charge ``tokens_used`` to the token window. Never raises."""
        ...

    async def check_ip(self, ip: str) -> None:
        """Raise ``RateLimitExceeded(scope="ip_auth")`` if ``ip`` failed authentication too often."""
        ...

    async def auth_failure(self, ip: str) -> None:
        """Count one failed authentication from ``ip``. Never raises."""
        ...

    async def auth_attempt(self, ip: str) -> AuthAttempt:
        """Hold one authentication attempt for ``ip`` while its bcrypt runs, or raise
        ``RateLimitExceeded(scope="ip_auth")`` when attempts in flight plus failures in the
        window already reach ``ip_auth_failures``."""
        ...

    async def auth_done(self, attempt: AuthAttempt, *, failed: bool) -> None:
        """Give the attempt back; ``failed`` also counts a failed authentication. Never raises."""
        ...

    async def aclose(self) -> None:
        ...


def _forget_ended(entries: OrderedDict, end: Callable[[Any], float], now: float) -> float:
    """Pop ``entries`` (ordered by when they end) that have ended by ``now``; the end of the
    first one left, or inf."""
    while entries:
        when = end(next(iter(entries.values())))
        if when > now:
            return when
        entries.popitem(last=False)
    return math.inf


class _KeyState:
    __slots__ = ("seen", "rpm_start", "rpm_count", "tpm_start", "tpm_used", "slots")

    def __init__(self, now: float):
        self.seen = now
        self.rpm_start = self.tpm_start = -math.inf
        self.rpm_count = self.tpm_used = 0
        self.slots: dict[str, float] = {}  # slot id -> expiry


class MemoryLimiter:
    """The embedded default: exact within this process, O(1) per call, bounded memory.

    Used from one event loop; nothing awaits between a check and its count.
    """

    SWEEP_PER_CALL = 2
    """Idle keys dropped per acquire at most (amortised O(1) cleanup)."""

    def __init__(self, policy: LimitPolicy = LimitPolicy(), *, max_keys: int = 100_000,
                 max_ips: int = 100_000, clock: Callable[[], float] = time.monotonic):
        if max_keys <= 0 or max_ips <= 0:
            raise ValueError("max_keys and max_ips must be > 0")
        self.policy = policy
        self._clock = clock
        self._max_keys = max_keys
        self._max_ips = max_ips
        # key id -> state, least recently used first.
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()
        # address bucket -> [window start, failures], oldest window first (re-inserted on renewal)
        self._ips: OrderedDict[str, list] = OrderedDict()
        self._slot_ids = itertools.count(1)
        self._idle_s = max(policy.window_s, policy.lease_s)
        # address bucket -> attempts in flight; an entry lives only while one is held.
        self._attempts: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        """Forgets the oldest address or key when it is over (``_expire``)."""
        # key id -> its lease when nothing limits it: nothing to count or hold, so one lease
        # (never changed by anyone) serves all its requests instead of one made per request
        self._free: dict[str, Lease] = {}

    # ---- keys ------------------------------------------------------------------------------
    def _state(self, key_id: str, now: float) -> _KeyState:
        keys = self._keys
        state = keys.get(key_id)
        if state is None:
            for _ in range(self.SWEEP_PER_CALL):
                if not keys:
                    break
                oldest = next(iter(keys.values()))
                # Untouched for longer than a window and a lease: its windows and slots are over.
                if now - oldest.seen <= self._idle_s:
                    break
                keys.popitem(last=False)
            state = keys[key_id] = _KeyState(now)
            if len(keys) > self._max_keys:
                keys.popitem(last=False)
            if self._timer is None:
                self._expire()
        else:
            keys.move_to_end(key_id)
        state.seen = now
        return state

    async def acquire(self, principal: Any, *, tokens: int = 0) -> Lease:
        return self.acquire_now(principal, tokens)

    def acquire_now(self, principal: Any, tokens: int = 0) -> Lease:
        """All of ``acquire``, synchronously: a memory limiter never waits."""
        # limits_for's values, read without building its frozen Limits (~1 us per request)
        policy = self.policy
        rpm = getattr(principal, "rpm", 0) or policy.rpm
        tpm = getattr(principal, "tpm", 0) or policy.tpm
        max_conc = getattr(principal, "max_concurrent", 0) or policy.max_concurrent
        key_id = principal.key_id
        if rpm <= 0 and tpm <= 0 and max_conc <= 0:
            lease = self._free.get(key_id)
            if lease is None:
                if len(self._free) >= self._max_keys:  # bounded like the tracked keys
                    self._free.clear()
                lease = self._free[key_id] = Lease(key_id)
            return lease
        now = self._clock()
        state = self._state(key_id, now)
        window = policy.window_s

        if rpm > 0:
            if now - state.rpm_start >= window:
                state.rpm_start, state.rpm_count = now, 0
            if state.rpm_count >= rpm:
                raise refuse("key_rpm", limit=rpm, window_s=window,
                             retry_after_s=retry_after(state.rpm_start + window - now, window))
        if tpm > 0:
            if now - state.tpm_start >= window:
                state.tpm_start, state.tpm_used = now, 0
            used = state.tpm_used
            if used >= tpm or used + min(max(tokens, 0), tpm) > tpm:
                raise refuse("key_tpm", limit=tpm, window_s=window, remaining=max(0, tpm - used),
                             retry_after_s=retry_after(state.tpm_start + window - now, window))
        slot = None
        if max_conc > 0:
            slots = state.slots
            if len(slots) >= max_conc:
                for sid in [s for s, exp in slots.items() if exp <= now]:
                    del slots[sid]  # leases nobody released
                if len(slots) >= max_conc:
                    raise refuse("key_concurrency", limit=max_conc, retry_after_s=1,
                                 window_s=window)
            slot = str(next(self._slot_ids))
            slots[slot] = now + policy.lease_s
        if rpm > 0:
            state.rpm_count += 1
            return Lease(key_id, slot, tpm, rpm, rpm - state.rpm_count,
                         retry_after(state.rpm_start + window - now, window))
        return Lease(key_id, slot, tpm)

    async def release(self, lease: Lease, *, tokens_used: int) -> None:
        charge = lease.tpm > 0 and tokens_used > 0
        if lease.slot is None and not charge:
            return
        now = self._clock()
        state = self._keys.get(lease.key_id)
        if state is None:
            if not charge:
                return
            state = self._state(lease.key_id, now)
        if lease.slot is not None:
            state.slots.pop(lease.slot, None)
        if charge:
            if now - state.tpm_start >= self.policy.window_s:
                state.tpm_start, state.tpm_used = now, 0
            state.tpm_used += tokens_used

    # ---- client addresses ------------------------------------------------------------------
    async def check_ip(self, ip: str) -> None:
        limit = self.policy.ip_auth_failures
        if limit <= 0:
            return
        entry = self._ips.get(ip_bucket(ip, self.policy.ipv6_prefix))
        if entry is None:
            return
        window = self.policy.ip_window_s
        left = entry[0] + window - self._clock()
        if left > 0 and entry[1] >= limit:
            raise refuse("ip_auth", limit=limit, window_s=window,
                         retry_after_s=retry_after(left, window))

    async def auth_failure(self, ip: str) -> None:
        if self.policy.ip_auth_failures <= 0:
            return
        ips = self._ips
        bucket = ip_bucket(ip, self.policy.ipv6_prefix)
        now = self._clock()
        window = self.policy.ip_window_s
        entry = ips.get(bucket)
        if entry is not None and now - entry[0] < window:
            entry[1] += 1
            return
        if entry is not None:
            del ips[bucket]  # re-inserted at the end so the dict stays ordered by window start
        # Windows are equal in length, so the first entries are the first to expire.
        while ips and now - next(iter(ips.values()))[0] >= window:
            ips.popitem(last=False)
        ips[bucket] = [now, 1]
        if len(ips) > self._max_ips:
            ips.popitem(last=False)
        if self._timer is None:
            self._expire()

    def _expire(self) -> None:
        """Drop the addresses whose window is over and the keys idle past theirs, then wake
        when the next one ends: each is forgotten in time (an address within the policy's hour)
        even if nothing else arrives to sweep it. Without a running loop (a synchronous
        caller) nothing can wake later; the sweeps on arrival still bound memory."""
        self._timer = None
        now = self._clock()
        due = min(_forget_ended(self._ips, lambda e: e[0] + self.policy.ip_window_s, now),
                  _forget_ended(self._keys, lambda s: s.seen + self._idle_s, now))
        if due < math.inf:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._timer = loop.call_later(due - now, self._expire)

    def _failures(self, bucket: str, now: float) -> tuple[int, float]:
        """(failures in the address's current window, seconds left in it)."""
        entry = self._ips.get(bucket)
        if entry is None:
            return 0, 0.0
        left = entry[0] + self.policy.ip_window_s - now
        return (entry[1], left) if left > 0 else (0, 0.0)

    async def auth_attempt(self, ip: str) -> AuthAttempt:
        limit = self.policy.ip_auth_failures
        if limit <= 0:
            return AuthAttempt(ip)
        bucket = ip_bucket(ip, self.policy.ipv6_prefix)
        failures, left = self._failures(bucket, self._clock())
        held = self._attempts.get(bucket, 0)
        if failures + held >= limit:
            window = self.policy.ip_window_s
            # Over on failures: wait for the window; over on attempts: they end within seconds.
            wait = retry_after(left, window) if failures >= limit else 1
            raise refuse("ip_auth", limit=limit, window_s=window, retry_after_s=wait)
        self._attempts[bucket] = held + 1
        return AuthAttempt(ip, bucket)

    async def auth_done(self, attempt: AuthAttempt, *, failed: bool) -> None:
        bucket = attempt.slot
        if bucket is not None:
            held = self._attempts.get(bucket, 0) - 1
            if held > 0:
                self._attempts[bucket] = held
            else:
                self._attempts.pop(bucket, None)
        if failed:
            await self.auth_failure(attempt.ip)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._keys.clear()
        self._ips.clear()
        self._attempts.clear()
        self._free.clear()

    # ---- introspection (tests, metrics) ----------------------------------------------------
    @property
    def tracked(self) -> tuple[int, int]:
        """(keys, addresses) currently held in memory."""
        return len(self._keys), len(self._ips)
