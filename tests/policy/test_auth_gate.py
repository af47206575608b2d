"""Key verification under per-address limits (``verify(token, AddressGate)``): a bcrypt run holds
one of the address's attempts, so a burst of wrong keys sent at once runs bcrypt at most
``ip_auth_failures`` times; one address holds at most a few runs, so it cannot fill the pool.

Real bcrypt (rounds=4) behind a checker that can hold every run until the test lets go, real
limiters (in memory, and Redis on a real redis-server).
"""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kraken import errors
from kraken.config import AuthConfig, KeyConfig
from kraken.policy.auth import KeyVerifier
from kraken.policy.authgate import AddressGate
from kraken.policy.bcrypt_pool import PER_ADDRESS
from kraken.accounts.keys import check_key, generate_key, hash_key
from kraken.policy.ratelimit import LimitPolicy, MemoryLimiter, RateLimitExceeded
from kraken.policy.redis_limits import RedisLimiter
from kraken.metrics import REGISTRY
from redis_server import redis_url  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.anyio

KEY = generate_key("gatekey")
OTHER = generate_key("gateother")
KEYS = [KeyConfig(id="gatekey", hash=hash_key(KEY, rounds=4), customer_id="c1"),
        KeyConfig(id="gateother", hash=hash_key(OTHER, rounds=4), customer_id="c2")]
ATTACKER, NEIGHBOUR = "198.51.100.7", "203.0.113.8"
POLL_S = 5.0


@pytest.fixture
def anyio_backend():
    return "asyncio"


def wrong(n: int) -> bytes:
    """A well-formed key for a configured id with a distinct wrong secret (no shared runs)."""
    return f"{KEY.rpartition('_')[0]}_{'x' * 20}{n:08d}".encode()


class HeldChecker:
    """The real check_key, counting runs and holding each one until ``release()``."""

    def __init__(self) -> None:
        self.calls = 0
        self._go = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, key: str, hashed: str) -> bool:
        with self._lock:
            self.calls += 1
        self._go.wait(10)
        return check_key(key, hashed)

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def make():
    made = []

    def factory(checker, **kw) -> KeyVerifier:
        v = KeyVerifier(KEYS, AuthConfig(bcrypt_threads=1), checker=checker, **kw)
        made.append(v)
        return v

    yield factory
    for v in made:
        v.close()


def refused_total() -> float:
    return REGISTRY.get_sample_value("kraken_refused_total", {"reason": "bcrypt_pool"}) or 0.0


def runs() -> float:
    return REGISTRY.get_sample_value("kraken_bcrypt_runs_total") or 0.0


async def until(predicate) -> None:
    """Poll an observable condition with a hard bound."""
    deadline = time.monotonic() + POLL_S
    while not predicate():
        assert time.monotonic() < deadline, "condition never reached"
        await asyncio.sleep(0.005)


async def until_refused(lim, ip: str) -> RateLimitExceeded:
    """Failures are counted as runs are given back: poll (bounded) until the address is refused."""
    deadline = time.monotonic() + POLL_S
    while True:
        try:
            await lim.check_ip(ip)
        except RateLimitExceeded as exc:
            return exc
        assert time.monotonic() < deadline, "the failures were never counted"
        await asyncio.sleep(0.01)


async def test_a_burst_of_wrong_keys_runs_bcrypt_at_most_the_address_limit(make):
    lim = MemoryLimiter(LimitPolicy(ip_auth_failures=3))
    checker = HeldChecker()
    v = make(checker)
    tasks = [asyncio.ensure_future(v.verify(wrong(n), AddressGate(lim, ATTACKER)))
             for n in range(30)]
    await until(lambda: sum(t.done() for t in tasks) == 27)  # refused while the runs are held
    checker.release()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert checker.calls == 3
    assert sum(isinstance(o, errors.Unauthorized) for o in outcomes) == 3
    limited = [o for o in outcomes if isinstance(o, RateLimitExceeded)]
    assert len(limited) == 27 and all(o.retry_after_s >= 1 for o in limited)
    assert (await until_refused(lim, ATTACKER)).scope == "ip_auth"


async def test_one_address_cannot_fill_the_pool(make):
    lim = MemoryLimiter(LimitPolicy(ip_auth_failures=1000))
    checker = HeldChecker()
    v = make(checker, max_pending=PER_ADDRESS + 2)
    before, runs_before = refused_total(), runs()
    flood = [asyncio.ensure_future(v.verify(wrong(n), AddressGate(lim, ATTACKER)))
             for n in range(PER_ADDRESS + 6)]
    await until(lambda: sum(t.done() for t in flood) == 6)
    valid = asyncio.ensure_future(v.verify(KEY.encode(), AddressGate(lim, NEIGHBOUR)))
    await until(lambda: runs() - runs_before == PER_ADDRESS + 1)  # queued beside the flood
    checker.release()
    assert (await valid).key_id == "gatekey"
    outcomes = await asyncio.gather(*flood, return_exceptions=True)
    limited = [o for o in outcomes if isinstance(o, RateLimitExceeded)]
    assert len(limited) == 6 and {o.status for o in limited} == {429}
    assert checker.calls == PER_ADDRESS + 1
    assert refused_total() - before == 6


async def test_a_good_key_gives_its_attempt_back_without_a_failure(make):
    lim = MemoryLimiter(LimitPolicy(ip_auth_failures=1))
    v = make(check_key)
    assert (await v.verify(KEY.encode(), AddressGate(lim, ATTACKER))).key_id == "gatekey"
    assert (await v.verify(OTHER.encode(), AddressGate(lim, ATTACKER))).key_id == "gateother"
    await lim.check_ip(ATTACKER)


async def test_refusals_without_bcrypt_count_one_failure_each(make):
    lim = MemoryLimiter(LimitPolicy(ip_auth_failures=3))
    checker = HeldChecker()
    checker.release()
    v = make(checker)
    for token in (b"nonsense", b"kr_live_unknownid_" + b"a" * 24, b"\xff" * 10):
        with pytest.raises(errors.Unauthorized):
            await v.verify(token, AddressGate(lim, ATTACKER))
    await until_refused(lim, ATTACKER)
    assert checker.calls == 0


async def test_a_client_that_disconnects_keeps_its_attempt_until_bcrypt_ends(make):
    lim = MemoryLimiter(LimitPolicy(ip_auth_failures=1))
    checker = HeldChecker()
    v = make(checker)
    runs_before = runs()
    task = asyncio.ensure_future(v.verify(wrong(1), AddressGate(lim, ATTACKER)))
    await until(lambda: runs() > runs_before)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The run goes on, so the address may not start another one...
    with pytest.raises(RateLimitExceeded):
        await v.verify(wrong(2), AddressGate(lim, ATTACKER))
    checker.release()
    await until_refused(lim, ATTACKER)  # ...and its wrong secret still counts as a failure
    assert checker.calls == 1


async def test_concurrent_checks_of_one_key_share_one_run_while_its_attempt_is_taken(
        make, redis_url):  # noqa: F811
    lim = RedisLimiter(redis_url, ip_salt=b"test-salt-0123456789abcdef", fail_open=False,
                       timeout_s=2.0, prefix="gate:",
                       policy=LimitPolicy(ip_auth_failures=3))
    checker = HeldChecker()
    checker.release()
    v = make(checker)
    try:
        results = await asyncio.gather(
            *(v.verify(KEY.encode(), AddressGate(lim, ATTACKER)) for _ in range(20)))
        assert {p.key_id for p in results} == {"gatekey"} and checker.calls == 1
    finally:
        await lim.aclose()
