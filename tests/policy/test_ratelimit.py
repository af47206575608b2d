"""Rate-limit behaviour every ``Limiter`` must show, run against the in-memory limiter and the
Redis one (a real redis-server), plus what only the in-memory limiter promises (bounded memory)."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import pytest

from kraken import metrics
from kraken.errors import RateLimited
from kraken.policy.auth import Principal
from kraken.policy.ratelimit import (
    Lease, LimitPolicy, Limits, MemoryLimiter, RateLimitExceeded, ip_bucket, limits_for,
)
from kraken.policy.redis_limits import RedisLimiter
from redis_server import redis_url  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.anyio

SALT = b"test-salt-0123456789abcdef"
WINDOW_S = 60
POLL_S = 5.0


@dataclass(frozen=True)
class Key:
    """A principal with every limit the limiters read."""

    key_id: str = "k1"
    customer_id: str = "c1"
    rpm: int = 0
    tpm: int = 0
    max_concurrent: int = 0


@pytest.fixture(params=["memory", "redis"])
async def make(request):
    """make(policy) -> a fresh limiter of the parametrized kind, closed after the test."""
    made = []
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    def factory(policy: LimitPolicy = LimitPolicy(), **kw):
        if request.param == "memory":
            lim = MemoryLimiter(policy, **kw)
        else:
            url = request.getfixturevalue("redis_url")
            lim = RedisLimiter(url, ip_salt=SALT, policy=policy, prefix=prefix, fail_open=False,
                               timeout_s=2.0, **kw)
        made.append(lim)
        return lim

    yield factory
    for lim in made:
        await lim.aclose()


async def refused(coro) -> RateLimitExceeded:
    with pytest.raises(RateLimitExceeded) as info:
        await coro
    return info.value


async def eventually_admitted(lim, principal, deadline_s: float = POLL_S) -> Lease:
    """Poll acquire until it admits (bounded): for windows and leases that expire."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await lim.acquire(principal)
        except RateLimitExceeded:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# ---- requests per minute ---------------------------------------------------------------------
async def test_rpm_admits_exactly_the_limit_then_429(make):
    lim = make()
    key = Key(rpm=5)
    leases = [await lim.acquire(key) for _ in range(5)]
    assert [l.remaining_requests for l in leases] == [4, 3, 2, 1, 0]
    exc = await refused(lim.acquire(key))
    assert isinstance(exc, RateLimited) and exc.status == 429
    assert exc.scope == "key_rpm" and exc.limit == 5
    headers = dict(exc.headers)
    assert headers[b"retry-after"] == str(exc.retry_after_s).encode()
    assert headers[b"x-ratelimit-limit-requests"] == b"5"
    assert headers[b"x-ratelimit-remaining-requests"] == b"0"


async def test_concurrent_acquires_admit_exactly_the_limit(make):
    lim = make()
    n = 10
    results = await asyncio.gather(*(lim.acquire(Key(rpm=n)) for _ in range(3 * n)),
                                   return_exceptions=True)
    assert sum(isinstance(r, Lease) for r in results) == n
    assert sum(isinstance(r, RateLimitExceeded) for r in results) == 2 * n


async def test_keys_are_limited_separately(make):
    lim = make()
    await lim.acquire(Key("a", rpm=1))
    await lim.acquire(Key("b", rpm=1))
    await refused(lim.acquire(Key("a", rpm=1)))


async def test_a_refusal_consumes_nothing(make):
    lim = make()
    key = Key(rpm=2, max_concurrent=1)
    first = await lim.acquire(key)
    exc = await refused(lim.acquire(key))
    assert exc.scope == "key_concurrency"
    await lim.release(first, tokens_used=0)
    second = await lim.acquire(key)  # the refused request did not use up the second request
    await lim.release(second, tokens_used=0)
    assert (await refused(lim.acquire(key))).scope == "key_rpm"


async def test_window_ends_so_no_ban_is_permanent(make):
    lim = make(LimitPolicy(window_s=0.5))
    key = Key(rpm=1)
    await lim.acquire(key)
    await refused(lim.acquire(key))
    await eventually_admitted(lim, key)


async def test_retry_after_is_a_positive_int_within_the_window(make):
    lim = make(LimitPolicy(ip_auth_failures=1))
    excs = []
    await lim.acquire(Key("r", rpm=1))
    excs.append(await refused(lim.acquire(Key("r", rpm=1))))
    lease = await lim.acquire(Key("t", tpm=10))
    await lim.release(lease, tokens_used=10)
    excs.append(await refused(lim.acquire(Key("t", tpm=10))))
    await lim.acquire(Key("c", max_concurrent=1))
    excs.append(await refused(lim.acquire(Key("c", max_concurrent=1))))
    await lim.auth_failure("192.0.2.1")
    excs.append(await refused(lim.check_ip("192.0.2.1")))
    assert [e.scope for e in excs] == ["key_rpm", "key_tpm", "key_concurrency", "ip_auth"]
    for e in excs:
        assert type(e.retry_after_s) is int and 1 <= e.retry_after_s <= WINDOW_S


# ---- tokens per minute -----------------------------------------------------------------------
async def test_tokens_charged_on_release_count_against_the_next_acquire(make):
    lim = make()
    key = Key(tpm=100)
    lease = await lim.acquire(key, tokens=10)
    await lim.release(lease, tokens_used=100)
    exc = await refused(lim.acquire(key))
    assert exc.scope == "key_tpm" and exc.limit == 100
    headers = dict(exc.headers)
    assert headers[b"x-ratelimit-limit-tokens"] == b"100"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"0"


async def test_token_estimate_is_checked_against_what_is_left(make):
    lim = make()
    key = Key(tpm=100)
    await lim.release(await lim.acquire(key), tokens_used=60)
    exc = await refused(lim.acquire(key, tokens=50))
    assert exc.remaining == 40
    await lim.acquire(key, tokens=40)


async def test_an_estimate_above_the_budget_fits_an_empty_window(make):
    lim = make()
    await lim.acquire(Key(tpm=100), tokens=1000)  # refusing it forever would be a permanent ban


# ---- concurrency -----------------------------------------------------------------------------
async def test_concurrency_slots_refuse_the_third_and_release_frees_one(make):
    lim = make()
    key = Key(max_concurrent=2)
    a = await lim.acquire(key)
    await lim.acquire(key)
    exc = await refused(lim.acquire(key))
    assert exc.scope == "key_concurrency" and exc.limit == 2 and exc.retry_after_s == 1
    await lim.release(a, tokens_used=0)
    await lim.acquire(key)
    await refused(lim.acquire(key))


async def test_a_lease_never_released_frees_itself(make):
    lim = make(LimitPolicy(lease_s=0.3))
    key = Key(max_concurrent=1)
    await lim.acquire(key)  # the holder "crashes": no release
    await refused(lim.acquire(key))
    await eventually_admitted(lim, key)


async def test_release_twice_or_of_an_unknown_key_is_harmless(make):
    lim = make()
    key = Key(max_concurrent=1)
    lease = await lim.acquire(key)
    await lim.release(lease, tokens_used=0)
    await lim.release(lease, tokens_used=0)
    await lim.release(Lease("nobody", "42", 10), tokens_used=5)
    await lim.acquire(key)


# ---- where limits come from ------------------------------------------------------------------
async def test_a_principal_without_limits_uses_the_policy_defaults(make):
    lim = make(LimitPolicy(rpm=2))
    principal = Principal("p1", "c1", rpm=0)  # the auth Principal has no tpm/max_concurrent
    await lim.acquire(principal)
    await lim.acquire(principal)
    await refused(lim.acquire(principal))
    own = Principal("p2", "c1", rpm=3)
    for _ in range(3):
        await lim.acquire(own)
    await refused(lim.acquire(own))


async def test_unlimited_keys_are_never_refused(make):
    lim = make()
    for _ in range(200):
        lease = await lim.acquire(Key(), tokens=10**6)
        assert lease.slot is None and lease.headers == []
        await lim.release(lease, tokens_used=10**6)


# ---- failed authentication per client address ------------------------------------------------
async def test_failed_authentications_block_the_address(make):
    lim = make()
    ip = "198.51.100.7"
    await lim.check_ip(ip)
    for _ in range(19):
        await lim.auth_failure(ip)
    await lim.check_ip(ip)
    await lim.auth_failure(ip)
    exc = await refused(lim.check_ip(ip))
    assert exc.scope == "ip_auth" and exc.status == 429
    assert ip not in exc.message
    await lim.check_ip("198.51.100.8")


async def test_ipv6_addresses_count_per_64(make):
    lim = make(LimitPolicy(ip_auth_failures=2))
    await lim.auth_failure("2001:db8:0:1::1")
    await lim.auth_failure("2001:db8:0:1:ffff::2")
    await refused(lim.check_ip("2001:db8:0:1::3"))
    await lim.check_ip("2001:db8:0:2::1")


async def test_address_block_expires(make):
    lim = make(LimitPolicy(ip_auth_failures=1, ip_window_s=0.5))
    await lim.auth_failure("203.0.113.9")
    await refused(lim.check_ip("203.0.113.9"))
    deadline = time.monotonic() + POLL_S
    while True:
        try:
            await lim.check_ip("203.0.113.9")
            break
        except RateLimitExceeded:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)


async def test_address_limit_can_be_disabled(make):
    lim = make(LimitPolicy(ip_auth_failures=0))
    for _ in range(50):
        await lim.auth_failure("192.0.2.50")
    await lim.check_ip("192.0.2.50")


# ---- authentication attempts in flight -------------------------------------------------------
async def test_attempts_in_flight_count_against_the_address_limit(make):
    lim = make(LimitPolicy(ip_auth_failures=3))
    ip = "198.51.100.40"
    held = [await lim.auth_attempt(ip) for _ in range(3)]
    exc = await refused(lim.auth_attempt(ip))  # no failure finished yet: the attempts count
    assert exc.scope == "ip_auth" and exc.retry_after_s == 1
    assert ip not in exc.message
    await lim.auth_attempt("198.51.100.41")  # another address has its own attempts
    await lim.check_ip(ip)  # attempts alone are no failures: cheap refusals still answer 401
    await lim.auth_done(held[0], failed=True)
    await lim.auth_done(held[1], failed=True)
    await refused(lim.auth_attempt(ip))  # 2 failures + 1 in flight
    await lim.auth_done(held[2], failed=True)
    exc = await refused(lim.check_ip(ip))
    assert 1 <= exc.retry_after_s <= WINDOW_S
    assert (await refused(lim.auth_attempt(ip))).retry_after_s >= 1


async def test_a_successful_attempt_is_given_back_without_a_failure(make):
    lim = make(LimitPolicy(ip_auth_failures=1))
    ip = "2001:db8:7::1"
    for _ in range(5):
        attempt = await lim.auth_attempt(ip)
        await refused(lim.auth_attempt("2001:db8:7::2"))  # same /64: its one attempt is held
        await lim.auth_done(attempt, failed=False)
    await lim.check_ip(ip)
    await lim.auth_done(await lim.auth_attempt(ip), failed=True)
    await refused(lim.check_ip(ip))


async def test_attempts_are_unlimited_when_the_address_limit_is_off(make):
    lim = make(LimitPolicy(ip_auth_failures=0))
    attempts = [await lim.auth_attempt("192.0.2.60") for _ in range(50)]
    for attempt in attempts:
        await lim.auth_done(attempt, failed=True)
    await lim.check_ip("192.0.2.60")


# ---- in-memory only --------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_tracks_a_bounded_number_of_keys_and_addresses():
    lim = MemoryLimiter(max_keys=10, max_ips=10)
    for i in range(100):
        await lim.acquire(Key(f"k{i}", rpm=5))
        await lim.auth_failure(f"10.0.{i // 256}.{i % 256}")
    assert lim.tracked == (10, 10)


async def test_memory_forgets_expired_windows():
    clock = FakeClock()
    lim = MemoryLimiter(LimitPolicy(window_s=60, lease_s=60), clock=clock)
    for i in range(50):
        await lim.acquire(Key(f"k{i}", rpm=5))
        await lim.auth_failure(f"10.0.0.{i}")
    clock.now += 61
    for i in range(50):
        await lim.acquire(Key(f"n{i}", rpm=5))
    await lim.auth_failure("10.1.0.1")
    assert lim.tracked == (50, 1)


async def test_memory_retry_after_counts_down_with_the_window():
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    await lim.acquire(Key(rpm=1))
    assert (await refused(lim.acquire(Key(rpm=1)))).retry_after_s == 60
    clock.now += 59.5
    assert (await refused(lim.acquire(Key(rpm=1)))).retry_after_s == 1
    clock.now += 0.5
    await lim.acquire(Key(rpm=1))


async def test_refusals_are_counted_by_scope():
    lim = MemoryLimiter()
    before = metrics.RATE_LIMITED.labels("key_rpm")._value.get()
    await lim.acquire(Key("m", rpm=1))
    await refused(lim.acquire(Key("m", rpm=1)))
    assert metrics.RATE_LIMITED.labels("key_rpm")._value.get() == before + 1


def test_a_principal_s_own_limits_win_over_defaults():
    policy = LimitPolicy(rpm=10, tpm=1000, max_concurrent=4)
    assert limits_for(Key(rpm=3, max_concurrent=1), policy) == Limits(3, 1000, 1)
    assert limits_for(Principal("x", "c", 0), policy) == Limits(10, 1000, 4)


@pytest.mark.parametrize("kwargs", [
    {"ip_window_s": 3601}, {"ip_window_s": 0}, {"window_s": 0}, {"rpm": -1}, {"lease_s": 0},
    {"ipv6_prefix": 0},
])
def test_policy_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        LimitPolicy(**kwargs)


@pytest.mark.parametrize("ip, bucket", [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:DB8:1:2::9", "2001:db8:1:2::/64"),
    ("not-an-ip", "not-an-ip"),
])
def test_ip_bucket(ip, bucket):
    assert ip_bucket(ip) == bucket


async def test_an_unlimited_key_shares_one_unchanging_lease_bounded_like_the_keys():
    """Nothing to count or hold: the same lease serves every request of the key (none made per
    request), it frees and charges nothing, and at most max_keys such leases are kept."""
    lim = MemoryLimiter(LimitPolicy(), max_keys=2)
    first = await lim.acquire(Key("a"))
    assert await lim.acquire(Key("a")) is first
    assert (first.key_id, first.slot, first.tpm, first.limit_requests) == ("a", None, 0, 0)
    await lim.release(first, tokens_used=500)
    assert await lim.acquire(Key("a")) is first and first == Lease("a")
    assert (await lim.acquire(Key("b"))).key_id == "b"
    assert (await lim.acquire(Key("c"))).key_id == "c"  # over max_keys: the kept ones dropped
    assert len(lim._free) == 1 and (await lim.acquire(Key("a"))) is not first
    limited = await lim.acquire(Key("a", rpm=5))  # a key with a limit still gets its own
    assert limited.limit_requests == 5 and limited is not await lim.acquire(Key("a", rpm=5))
    await lim.aclose()
