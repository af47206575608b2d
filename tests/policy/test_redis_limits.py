"""RedisLimiter against a real redis-server: exact across workers, every key expires, no raw
client address in Redis, bounded behaviour when Redis is down or hung."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from kraken.errors import Overloaded
from kraken.policy import redis_limits
from kraken.policy.ratelimit import AuthAttempt, Lease, LimitPolicy, RateLimitExceeded
from kraken.policy.redis_limits import ATTEMPT_HOLD_S, TRIP_AFTER, RedisLimiter
from redis_server import redis_server, redis_url  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.anyio

SALT = b"test-salt-0123456789abcdef"
WORKERS = 4
POLL_S = 5.0
DOWN_BOUND_S = 0.5
"""Longest a single call may take when Redis is down or hung (default 50 ms timeouts)."""


async def admitted_within(attempt, why: str, refused=(RateLimitExceeded,),
                          undegraded: bool = False):
    """``attempt()`` once it is admitted again (a slot expired or given back), polled within
    ``POLL_S``; ``undegraded``: only a lease from Redis itself counts, not a fail-open one."""
    deadline = time.monotonic() + POLL_S
    while True:
        try:
            got = await attempt()
            if not (undegraded and got.degraded):
                return got
        except refused:
            pass
        assert time.monotonic() < deadline, why
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Key:
    key_id: str = "k1"
    customer_id: str = "c1"
    rpm: int = 0
    tpm: int = 0
    max_concurrent: int = 0


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def workers(redis_url, prefix):  # noqa: F811
    """make(**kw) -> a RedisLimiter with its own connection pool, like a separate worker."""
    made: list[RedisLimiter] = []

    def make(policy: LimitPolicy = LimitPolicy(), **kw) -> RedisLimiter:
        kw = {"ip_salt": SALT, "prefix": prefix, "fail_open": False, "timeout_s": 2.0, **kw}
        lim = RedisLimiter(redis_url, policy=policy, **kw)
        made.append(lim)
        return lim

    yield make
    for lim in made:
        await lim.aclose()


@pytest.fixture
async def raw(redis_url):  # noqa: F811
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def all_keys(raw: Redis, prefix: str) -> list[bytes]:
    return [k async for k in raw.scan_iter(match=prefix + "*", count=1000)]


async def dump(raw: Redis, key: bytes) -> bytes:
    """Every byte a key holds, whatever its type."""
    kind = (await raw.type(key)).decode()
    if kind == "string":
        return await raw.get(key) or b""
    if kind == "zset":
        return b" ".join(m + b"=" + str(s).encode()
                         for m, s in await raw.zrange(key, 0, -1, withscores=True))
    return b""


async def exercise(lim: RedisLimiter, ip: str) -> None:
    """Every operation once, each creating what it creates."""
    key = Key(rpm=10, tpm=1000, max_concurrent=5)
    lease = await lim.acquire(key, tokens=10)
    await lim.acquire(key)  # left holding a slot
    await lim.release(lease, tokens_used=42)
    await lim.auth_failure(ip)
    await lim.check_ip(ip)


# ---- (1) exact across workers ----------------------------------------------------------------
async def test_n_per_minute_across_four_workers_admits_exactly_n(workers):
    lims = [workers() for _ in range(WORKERS)]
    n = 25
    key = Key(rpm=n)
    results = await asyncio.gather(*(lims[i % WORKERS].acquire(key) for i in range(3 * n)),
                                   return_exceptions=True)
    admitted = [r for r in results if isinstance(r, Lease)]
    refused = [r for r in results if isinstance(r, RateLimitExceeded)]
    assert len(admitted) == n and len(refused) == 2 * n, results
    assert lims[0].acquire_now(key) is None  # Redis decides: the pipeline must await acquire
    assert sorted(l.remaining_requests for l in admitted) == list(range(n))


async def test_concurrency_slots_across_four_workers_are_exact(workers):
    lims = [workers() for _ in range(WORKERS)]
    key = Key(max_concurrent=3)
    results = await asyncio.gather(*(lims[i % WORKERS].acquire(key) for i in range(12)),
                                   return_exceptions=True)
    leases = [r for r in results if isinstance(r, Lease)]
    assert len(leases) == 3
    assert len({l.slot for l in leases}) == 3
    await lims[3].release(leases[0], tokens_used=0)  # any worker may release
    await lims[2].acquire(key)


async def test_tokens_charged_by_one_worker_limit_another(workers):
    a, b = workers(), workers()
    key = Key(tpm=500)
    await a.release(await a.acquire(key), tokens_used=500)
    exc = await _refused(b.acquire(key))
    assert exc.scope == "key_tpm"


# ---- (2) client addresses: TTL within the hour, never stored raw -----------------------------
@pytest.mark.parametrize("ip", ["198.51.100.23", "2001:db8:aa:bb::17", "::ffff:203.0.113.5"])
async def test_ip_keys_expire_within_an_hour_and_hold_no_raw_address(workers, raw, prefix, ip):
    lim = workers(LimitPolicy(ip_window_s=3600, ip_auth_failures=3))
    await exercise(lim, ip)  # one failure
    for _ in range(2):
        await lim.auth_failure(ip)
    with pytest.raises(RateLimitExceeded):
        await lim.check_ip(ip)
    keys = await all_keys(raw, prefix)
    ip_keys = [k for k in keys if k.startswith((prefix + "ip:").encode())]
    assert len(ip_keys) == 1
    assert 0 < await raw.pttl(ip_keys[0]) <= 3600 * 1000
    assert 0 < await raw.ttl(ip_keys[0]) <= 3600
    forms = {ip, ip.upper(), ip.split(":")[-1] if "." in ip else ip}
    for key in keys:
        blob = key + b"\0" + await dump(raw, key)
        for form in forms:
            assert form.encode() not in blob, (key, form)


async def test_ip_key_depends_on_the_deployment_salt(workers):
    a = workers()
    b = workers(ip_salt=b"another-salt-0123456789")
    assert a.ip_key("192.0.2.1") == workers().ip_key("192.0.2.1")
    assert a.ip_key("192.0.2.1") != b.ip_key("192.0.2.1")
    assert a.ip_key("192.0.2.1") != a.ip_key("192.0.2.2")


def test_a_short_salt_is_refused(redis_url):  # noqa: F811
    with pytest.raises(ValueError, match="ip_salt"):
        RedisLimiter(redis_url, ip_salt=b"short")


# ---- (3) no key without an expiry ------------------------------------------------------------
async def test_every_key_any_operation_creates_has_a_ttl(workers, raw, prefix):
    lim = workers()
    await exercise(lim, "192.0.2.77")
    for i in range(5):
        key = Key(f"x{i}", rpm=2, tpm=10, max_concurrent=1)
        lease = None
        for _ in range(3):
            try:
                lease = await lim.acquire(key, tokens=5)
            except RateLimitExceeded:
                pass
        if lease is not None:
            await lim.release(lease, tokens_used=20)
        await lim.auth_failure(f"192.0.2.{i}")
    keys = await all_keys(raw, prefix)
    kinds = {k.decode().rsplit(":", 1)[-1] for k in keys if b":k:" in k}
    assert kinds == {"r", "t", "c"} and sum(b":ip:" in k for k in keys) == 6
    for key in keys:
        assert await raw.pttl(key) > 0, key


async def test_a_counter_left_without_expiry_is_repaired(workers, raw, prefix):
    lim = workers()
    stale = f"{prefix}k:{{k1}}:r"
    await raw.set(stale, 99)  # written by something else, without a TTL
    with pytest.raises(RateLimitExceeded) as info:
        await lim.acquire(Key(rpm=5))
    assert 0 < await raw.pttl(stale) <= 60_000
    assert 1 <= info.value.retry_after_s <= 60


# ---- (4) a crashed worker's slot frees itself ------------------------------------------------
async def test_a_crashed_workers_slots_free_after_the_lease(workers):
    policy = LimitPolicy(lease_s=0.5)
    crashed, alive = workers(policy), workers(policy)
    key = Key(max_concurrent=2)
    await crashed.acquire(key)
    await crashed.acquire(key)
    await crashed.aclose()  # never releases
    with pytest.raises(RateLimitExceeded):
        await alive.acquire(key)
    await admitted_within(lambda: alive.acquire(key), "slots of a crashed worker never freed")


# ---- scripts survive a Redis restart / SCRIPT FLUSH ------------------------------------------
async def test_scripts_are_reloaded_after_a_script_flush(workers, raw):
    lim = workers()
    await lim.acquire(Key(rpm=3))
    await raw.script_flush()
    await lim.acquire(Key(rpm=3))
    await lim.check_ip("192.0.2.9")


# ---- (6) Redis down or hung ------------------------------------------------------------------
@pytest.fixture
def own_server(tmp_path):
    """A redis-server for one test, which it may stop or pause."""
    with redis_server(tmp_path / "redis") as server:
        yield server


async def timed(coro):
    start = time.monotonic()
    try:
        return await coro, time.monotonic() - start
    except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
        return exc, time.monotonic() - start


async def test_redis_down_fail_open_serves_and_fail_closed_refuses(own_server):
    events: list[str] = []
    opened = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=True,
                          on_unavailable=events.append)
    closed = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=False)
    key = Key(rpm=1, max_concurrent=1)
    try:
        lease = await opened.acquire(key)
        assert not lease.degraded
        own_server.stop()
        for _ in range(TRIP_AFTER + 2):
            got, took = await timed(opened.acquire(key))
            assert isinstance(got, Lease) and got.degraded and took < DOWN_BOUND_S, (got, took)
            got, took = await timed(closed.acquire(key))
            assert isinstance(got, Overloaded) and got.status == 503 and took < DOWN_BOUND_S
            got, took = await timed(closed.check_ip("192.0.2.1"))
            assert isinstance(got, Overloaded) and took < DOWN_BOUND_S
            got, took = await timed(opened.check_ip("192.0.2.1"))
            assert got is None and took < DOWN_BOUND_S
        for lim in (opened, closed):  # never raise on the way out
            await lim.release(lease, tokens_used=10)
            await lim.auth_failure("192.0.2.1")
        assert set(events) == {"acquire", "check_ip", "release", "auth_failure"}
    finally:
        await opened.aclose()
        await closed.aclose()


async def test_hung_redis_stalls_a_call_only_briefly_and_recovers(own_server):
    lim = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=True, retry_s=0.2)
    key = Key(rpm=100)
    try:
        assert not (await lim.acquire(key)).degraded
        with own_server.hung():
            for _ in range(TRIP_AFTER + 3):
                got, took = await timed(lim.acquire(key))
                assert isinstance(got, Lease) and got.degraded and took < DOWN_BOUND_S, took
            # after TRIP_AFTER failures Redis is skipped: no wait at all
            got, took = await timed(lim.acquire(key))
            assert got.degraded and took < 0.05
        await admitted_within(lambda: lim.acquire(key),
                              "never used Redis again after it recovered", undegraded=True)
    finally:
        await lim.aclose()


async def test_a_release_lost_in_an_outage_is_sent_when_redis_answers(own_server):
    lim = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=False, retry_s=0.1,
                       policy=LimitPolicy(lease_s=600))
    key = Key(max_concurrent=1)
    try:
        lease = await lim.acquire(key)
        with own_server.hung():
            got, took = await timed(lim.release(lease, tokens_used=0))
            assert got is None and took < DOWN_BOUND_S
        # without the retry the slot would stay taken for the whole 600 s lease
        await admitted_within(lambda: lim.acquire(key), "the lost release was never sent",
                              refused=(RateLimitExceeded, Overloaded))
    finally:
        await lim.aclose()


async def _refused(coro) -> RateLimitExceeded:
    with pytest.raises(RateLimitExceeded) as info:
        await coro
    return info.value


# ---- authentication attempts in flight -------------------------------------------------------
async def test_attempts_in_flight_across_four_workers_are_exact(workers):
    lims = [workers(LimitPolicy(ip_auth_failures=5)) for _ in range(WORKERS)]
    ip = "198.51.100.61"
    results = await asyncio.gather(*(lims[i % WORKERS].auth_attempt(ip) for i in range(20)),
                                   return_exceptions=True)
    held = [r for r in results if isinstance(r, AuthAttempt)]
    assert len(held) == 5 and len({a.slot for a in held}) == 5, results
    assert all(isinstance(r, RateLimitExceeded) and r.retry_after_s == 1
               for r in results if r not in held)
    for i, attempt in enumerate(held):  # any worker may give an attempt back
        await lims[(i + 1) % WORKERS].auth_done(attempt, failed=True)
    exc = await _refused(lims[0].check_ip(ip))
    assert exc.scope == "ip_auth" and 1 <= exc.retry_after_s <= 60


async def test_attempt_keys_expire_and_hold_no_raw_address(workers, raw, prefix):
    lim = workers(LimitPolicy(ip_auth_failures=3))
    ip = "203.0.113.61"
    held = await lim.auth_attempt(ip)
    await lim.auth_attempt(ip)
    await lim.auth_done(held, failed=True)
    keys = await all_keys(raw, prefix)
    assert sorted(k.decode()[len(prefix):].split("}")[-1] for k in keys) == ["", ":a"]
    for key in keys:
        assert 0 < await raw.pttl(key) <= ATTEMPT_HOLD_S * 1000
        assert ip.encode() not in key + b"\0" + await dump(raw, key)


async def test_a_crashed_workers_attempts_free_themselves(workers, monkeypatch):
    monkeypatch.setattr(redis_limits, "ATTEMPT_HOLD_S", 0.5)
    policy = LimitPolicy(ip_auth_failures=2)
    crashed, alive = workers(policy), workers(policy)
    ip = "192.0.2.61"
    await crashed.auth_attempt(ip)
    await crashed.auth_attempt(ip)
    await crashed.aclose()  # never gives them back
    await _refused(alive.auth_attempt(ip))
    await admitted_within(lambda: alive.auth_attempt(ip),
                          "attempts of a crashed worker never freed")


async def test_redis_down_attempts_fail_open_or_closed_and_give_back_never_raises(own_server):
    opened = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=True)
    closed = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=False)
    try:
        held = await opened.auth_attempt("192.0.2.62")
        assert held.slot is not None
        own_server.stop()
        got, took = await timed(opened.auth_attempt("192.0.2.62"))
        assert isinstance(got, AuthAttempt) and got.slot is None and took < DOWN_BOUND_S
        got, took = await timed(closed.auth_attempt("192.0.2.62"))
        assert isinstance(got, Overloaded) and took < DOWN_BOUND_S
        for lim in (opened, closed):
            got, took = await timed(lim.auth_done(held, failed=True))
            assert got is None and took < DOWN_BOUND_S
    finally:
        await opened.aclose()
        await closed.aclose()


async def test_a_slot_taken_by_an_acquire_that_timed_out_is_given_back(own_server):
    """A hung Redis still runs the acquire the client gave up on once it resumes: that slot
    must be given back too, not hold the key's concurrency for the whole lease."""
    lim = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=True, retry_s=0.1,
                       policy=LimitPolicy(lease_s=600))
    key = Key(max_concurrent=1)
    try:
        assert not (await lim.acquire(Key("warm", rpm=100))).degraded  # connected, script loaded
        with own_server.hung():
            got, took = await timed(lim.acquire(key))
            assert isinstance(got, Lease) and got.degraded and took < DOWN_BOUND_S
        await admitted_within(lambda: lim.acquire(key),
                              "the timed-out acquire's slot was never freed", undegraded=True)
    finally:
        await lim.aclose()


async def test_a_slot_taken_by_an_acquire_cancelled_midway_is_given_back(own_server):
    """A client that disconnects while its acquire waits on Redis cancels it; Redis still runs
    the script it was sent, so that slot must be given back, not held for the whole lease."""
    lim = RedisLimiter(own_server.url, ip_salt=SALT, fail_open=True, timeout_s=5.0,
                       policy=LimitPolicy(lease_s=600))
    key = Key(max_concurrent=1)
    try:
        assert not (await lim.acquire(Key("warm", rpm=100))).degraded  # connected, script loaded
        with own_server.hung():
            with pytest.raises(TimeoutError):  # the client's request cancelled mid-acquire
                await asyncio.wait_for(lim.acquire(key), 0.3)
        await admitted_within(lambda: lim.acquire(key),
                              "the cancelled acquire's slot was never freed")
    finally:
        await lim.aclose()
