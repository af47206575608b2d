"""Key verification: bcrypt only on a cache miss, single flight, uniform 401, revocation.

Real bcrypt throughout. Hashes use rounds=4 for speed, except the test proving that cached
verification does not run the default cost-12 bcrypt again. Runs are counted through the
``checker`` injection point, which wraps the real ``check_key``.
"""
from __future__ import annotations

import asyncio
import hashlib
import threading

import pytest

from kraken import errors
from kraken.config import AuthConfig, KeyConfig
from kraken.policy.auth import INVALID_KEY_MESSAGE, KeyVerifier, Principal, credential
from kraken.accounts.keys import check_key, generate_key, hash_key
from kraken.metrics import REGISTRY

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


KEY_ID = "zq7x3k"
KEY = generate_key(KEY_ID)
HASH = hash_key(KEY, rounds=4)
OTHER = generate_key("other1")
OTHER_HASH = hash_key(OTHER, rounds=4)
WRONG = KEY[: -4] + ("AAAA" if not KEY.endswith("AAAA") else "BBBB")


class CountingChecker:
    """The real check_key, counting its runs (it is called from pool threads)."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls = 0
        self.gate = gate
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, key: str, hashed: str) -> bool:
        with self._lock:
            self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        return check_key(key, hashed)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_cfg(key_id=KEY_ID, hashed=HASH, customer="cust_1", rpm=60) -> KeyConfig:
    return KeyConfig(id=key_id, hash=hashed, customer_id=customer, rpm=rpm)


@pytest.fixture
def checker():
    return CountingChecker()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_verifier(checker, clock):
    made = []

    def make(keys=None, *, check=None, **cfg_kw):
        cfg = AuthConfig(**{"cache_ttl_s": 300.0, "negative_ttl_s": 5.0, **cfg_kw})
        keys = [key_cfg(), key_cfg("other1", OTHER_HASH, "cust_2", 0)] if keys is None else keys
        v = KeyVerifier(keys, cfg, checker=check or checker, clock=clock)
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def wait_entered(c: CountingChecker) -> None:
    while not c.entered.is_set():
        await asyncio.sleep(0.001)


# -- the happy path ----------------------------------------------------------------------------


async def test_valid_key_yields_its_principal(make_verifier):
    v = make_verifier()
    assert await v.verify(KEY.encode()) == Principal(KEY_ID, "cust_1", 60)
    assert await v.verify(OTHER.encode()) == Principal("other1", "cust_2", 0)


async def test_lookup_cached_answers_only_after_a_verification(make_verifier):
    v = make_verifier()
    assert v.lookup_cached(KEY.encode()) is None
    await v.verify(KEY.encode())
    assert v.lookup_cached(KEY.encode()) == Principal(KEY_ID, "cust_1", 60)
    assert v.lookup_cached(OTHER.encode()) is None
    assert v.lookup_cached(WRONG.encode()) is None


async def test_cache_is_keyed_by_digest_never_the_token(make_verifier):
    v = make_verifier()
    await v.verify(KEY.encode())
    with pytest.raises(errors.Unauthorized):
        await v.verify(WRONG.encode())
    stored = list(v._cache) + list(v._negative)
    assert len(stored) == 2
    assert all(len(d) == 32 for d in stored)
    assert KEY.encode() not in stored and WRONG.encode() not in stored
    # BLAKE2s-256, not SHA-256 through OpenSSL (half the cost with cold caches)
    assert set(stored) == {hashlib.blake2s(t.encode()).digest() for t in (KEY, WRONG)}


# -- bcrypt runs once per key per TTL ------------------------------------------------------------


async def test_default_cost_bcrypt_runs_once_per_ttl(clock):
    hashed = hash_key(KEY)  # cost 12, ~300 ms
    assert hashed.startswith("$2b$12$")
    counting = CountingChecker()
    v = KeyVerifier([key_cfg(hashed=hashed)], AuthConfig(cache_ttl_s=60.0), checker=counting,
                    clock=clock)
    try:
        results = await asyncio.gather(*(v.verify(KEY.encode()) for _ in range(50)))
        assert counting.calls == 1
        assert set(results) == {Principal(KEY_ID, "cust_1", 60)}

        loop = asyncio.get_running_loop()
        for _ in range(20):
            started = loop.time()
            assert await v.verify(KEY.encode()) == results[0]
            assert loop.time() - started < 0.05  # far below one cost-12 bcrypt
        assert v.lookup_cached(KEY.encode()) == results[0]
        assert counting.calls == 1

        clock.now += 59.0
        assert await v.verify(KEY.encode()) == results[0]
        assert counting.calls == 1

        clock.now += 1.0  # TTL over: verified again, exactly once
        assert v.lookup_cached(KEY.encode()) is None
        await asyncio.gather(*(v.verify(KEY.encode()) for _ in range(10)))
        assert counting.calls == 2
    finally:
        v.close()


async def test_concurrent_wrong_secrets_share_one_run(make_verifier, checker):
    v = make_verifier()
    outcomes = await asyncio.gather(
        *(v.verify(WRONG.encode()) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, errors.Unauthorized) for o in outcomes)
    assert checker.calls == 1


async def test_a_cancelled_waiter_does_not_lose_the_result(make_verifier):
    gate = threading.Event()
    gated = CountingChecker(gate)
    v = make_verifier(check=gated)
    try:
        first = asyncio.ensure_future(v.verify(KEY.encode()))
        second = asyncio.ensure_future(v.verify(KEY.encode()))
        await wait_entered(gated)
        first.cancel()
        await asyncio.sleep(0)
    finally:
        gate.set()
    assert (await second).key_id == KEY_ID
    with pytest.raises(asyncio.CancelledError):
        await first
    assert v.lookup_cached(KEY.encode()) is not None
    assert gated.calls == 1


# -- one uniform refusal --------------------------------------------------------------------------


async def test_every_bad_key_gets_the_same_refusal(make_verifier, checker):
    v = make_verifier()
    revoked = generate_key("gone42")
    revoked_hash = hash_key(revoked, rounds=4)
    v.replace_keys([key_cfg(), key_cfg("gone42", revoked_hash)])
    await v.verify(revoked.encode())
    v.revoke("gone42")

    cases = {
        "missing": None,
        "empty": b"",
        "malformed": b"not-a-key",
        "openai style": b"sk-" + b"a" * 48,
        "non ascii": KEY.encode()[:-1] + "\u00e9".encode(),
        "oversized": KEY.encode() * 10,
        "unknown id": generate_key("nobody").encode(),
        "wrong secret": WRONG.encode(),
        "wrong secret, cached": WRONG.encode(),
        "wrong env": KEY.replace("kr_live_", "kr_test_").encode(),
        "revoked": revoked.encode(),
    }
    failures_before = sample("kraken_auth_failures_total")
    seen = set()
    for kind, token in cases.items():
        with pytest.raises(errors.Unauthorized) as info:
            await v.verify(token)
        exc = info.value
        seen.add((exc.status, exc.message, str(exc), exc.error_type, exc.code))
        text = str(exc) + repr(exc) + exc.message
        secrets_ = [KEY, KEY_ID, HASH, WRONG, revoked, "gone42", revoked_hash]
        if token:
            secrets_.append(token.decode("utf-8"))
        for secret in secrets_:
            assert secret not in text, kind
    assert seen == {
        (401, INVALID_KEY_MESSAGE, INVALID_KEY_MESSAGE, "invalid_request_error", "invalid_api_key")
    }
    assert sample("kraken_auth_failures_total") - failures_before == len(cases)


async def test_malformed_and_unknown_keys_never_run_bcrypt(make_verifier, checker):
    v = make_verifier()
    for token in [b"nope", b"kr_live_zq7x3k_short", generate_key("nobody").encode(), b"\xff" * 40]:
        with pytest.raises(errors.Unauthorized):
            await v.verify(token)
    assert checker.calls == 0


# -- negative cache -----------------------------------------------------------------------------


async def test_wrong_secret_is_cached_negatively_until_its_ttl(make_verifier, checker, clock):
    v = make_verifier(negative_ttl_s=5.0)
    neg_before = sample("kraken_auth_cache_total", {"outcome": "negative_hit"})
    for _ in range(5):
        with pytest.raises(errors.Unauthorized):
            await v.verify(WRONG.encode())
    assert checker.calls == 1
    assert sample("kraken_auth_cache_total", {"outcome": "negative_hit"}) - neg_before == 4
    assert v.lookup_cached(WRONG.encode()) is None

    clock.now += 5.0
    with pytest.raises(errors.Unauthorized):
        await v.verify(WRONG.encode())
    assert checker.calls == 2


async def test_negative_entry_is_ignored_once_the_hash_changes(make_verifier, checker):
    v = make_verifier()
    with pytest.raises(errors.Unauthorized):
        await v.verify(WRONG.encode())
    # The operator re-issues the key so that the formerly wrong token is now the right one.
    v.replace_keys([key_cfg(hashed=hash_key(WRONG, rounds=4))])
    assert (await v.verify(WRONG.encode())).key_id == KEY_ID
    assert checker.calls == 2


# -- revocation and reload ------------------------------------------------------------------------


async def test_revoke_takes_effect_immediately_for_a_cached_key(make_verifier, checker):
    v = make_verifier()
    await v.verify(KEY.encode())
    assert v.lookup_cached(KEY.encode()) is not None
    v.revoke(KEY_ID)
    assert v.lookup_cached(KEY.encode()) is None
    with pytest.raises(errors.Unauthorized):
        await v.verify(KEY.encode())
    assert checker.calls == 1
    assert (await v.verify(OTHER.encode())).key_id == "other1"


async def test_revoke_during_bcrypt_refuses_and_caches_nothing(make_verifier):
    gate = threading.Event()
    gated = CountingChecker(gate)
    v = make_verifier(check=gated)
    try:
        pending = asyncio.ensure_future(v.verify(KEY.encode()))
        await wait_entered(gated)
        v.revoke(KEY_ID)
    finally:
        gate.set()
    with pytest.raises(errors.Unauthorized):
        await pending
    assert v.lookup_cached(KEY.encode()) is None


async def test_replace_keys_drops_only_changed_keys(make_verifier, checker):
    v = make_verifier()
    await v.verify(KEY.encode())
    await v.verify(OTHER.encode())
    assert checker.calls == 2

    new_other = generate_key("other1")
    v.replace_keys([
        key_cfg(customer="cust_9", rpm=5),  # same hash, new limits
        key_cfg("other1", hash_key(new_other, rounds=4), "cust_2", 0),  # rotated
    ])
    assert v.lookup_cached(KEY.encode()) == Principal(KEY_ID, "cust_9", 5)
    assert v.lookup_cached(OTHER.encode()) is None
    assert checker.calls == 2
    with pytest.raises(errors.Unauthorized):
        await v.verify(OTHER.encode())
    assert (await v.verify(new_other.encode())).key_id == "other1"

    v.replace_keys([key_cfg("other1", OTHER_HASH, "cust_2", 0)])  # KEY removed
    assert v.lookup_cached(KEY.encode()) is None
    with pytest.raises(errors.Unauthorized):
        await v.verify(KEY.encode())


def test_replace_keys_rejects_duplicate_and_unusable_ids(make_verifier):
    v = make_verifier()
    with pytest.raises(ValueError):
        v.replace_keys([key_cfg(), key_cfg()])
    with pytest.raises(ValueError):
        v.replace_keys([key_cfg("Bad-Id")])


# -- bounds ---------------------------------------------------------------------------------------


async def test_positive_cache_is_bounded_oldest_evicted_first(make_verifier, checker):
    keys = [generate_key(f"k{i}") for i in range(3)]
    v = make_verifier([key_cfg(f"k{i}", hash_key(k, rounds=4)) for i, k in enumerate(keys)],
                      cache_max=2)
    await v.verify(keys[0].encode())
    await v.verify(keys[1].encode())
    assert v.lookup_cached(keys[0].encode()) is not None  # k0 is now the most recent
    await v.verify(keys[2].encode())
    assert v.lookup_cached(keys[1].encode()) is None
    assert v.lookup_cached(keys[0].encode()) is not None
    assert v.lookup_cached(keys[2].encode()) is not None
    assert len(v._cache) == 2
    assert sample("kraken_auth_cache_entries") == 2
    await v.verify(keys[1].encode())
    assert checker.calls == 4


async def test_negative_cache_is_bounded(make_verifier, checker):
    v = make_verifier(cache_max=2)
    wrong = [KEY[:-3] + s for s in ("AAA", "BBB", "CCC")]
    for token in wrong:
        with pytest.raises(errors.Unauthorized):
            await v.verify(token.encode())
    assert len(v._negative) == 2
    with pytest.raises(errors.Unauthorized):
        await v.verify(wrong[0].encode())  # evicted, so checked again
    assert checker.calls == 4


async def test_too_many_queued_bcrypt_runs_is_a_503(clock):
    gate = threading.Event()
    gated = CountingChecker(gate)
    keys = [generate_key(f"q{i}") for i in range(2)]
    v = KeyVerifier([key_cfg(f"q{i}", hash_key(k, rounds=4)) for i, k in enumerate(keys)],
                    AuthConfig(bcrypt_threads=1), checker=gated, clock=clock, max_pending=1)
    try:
        first = asyncio.ensure_future(v.verify(keys[0].encode()))
        joined = asyncio.ensure_future(v.verify(keys[0].encode()))  # same key joins the run
        await wait_entered(gated)
        with pytest.raises(errors.Overloaded) as info:
            await v.verify(keys[1].encode())
        assert info.value.status == 503
    finally:
        gate.set()
    assert (await first).key_id == "q0"
    assert (await joined).key_id == "q0"
    assert (await v.verify(keys[1].encode())).key_id == "q1"
    v.close()


async def test_default_queue_bound_is_64_per_thread():
    v = KeyVerifier([], AuthConfig(bcrypt_threads=3))
    assert v._max_pending == 192
    v.close()


async def test_after_close_cached_keys_still_verify_and_misses_get_503(make_verifier):
    v = make_verifier()
    await v.verify(KEY.encode())
    v.close()
    assert (await v.verify(KEY.encode())).key_id == KEY_ID
    with pytest.raises(errors.Overloaded):
        await v.verify(OTHER.encode())


# -- metrics --------------------------------------------------------------------------------------


async def test_cache_outcomes_are_counted(make_verifier):
    v = make_verifier()

    def counts():
        return {o: sample("kraken_auth_cache_total", {"outcome": o})
                for o in ("hit", "miss", "negative_hit")}

    before = counts()
    await v.verify(KEY.encode())
    await v.verify(KEY.encode())
    v.lookup_cached(KEY.encode())
    for _ in range(2):
        with pytest.raises(errors.Unauthorized):
            await v.verify(WRONG.encode())
    after = counts()
    assert {o: after[o] - before[o] for o in after} == {"hit": 2, "miss": 2, "negative_hit": 1}


# -- credential() -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization, x_api_key, expected",
    [
        (b"Bearer kr_t", None, b"kr_t"),
        (b"bearer kr_t", None, b"kr_t"),
        (b"BEARER   kr_t  ", None, b"kr_t"),
        (b"  Bearer kr_t", None, b"kr_t"),
        (None, b"kr_t", b"kr_t"),
        (None, b"  kr_t ", b"kr_t"),
        (b"Bearer kr_a", b"kr_b", b"kr_a"),
        (b"Basic dXNlcjpwdw==", b"kr_b", b"kr_b"),
        (b"Basic dXNlcjpwdw==", None, None),
        (b"Bearer", None, None),
        (b"Bearer    ", None, None),
        (b"Bearerkr_t", None, None),
        (b"kr_t", None, None),
        (b"", b"", None),
        (None, b"   ", None),
        (None, None, None),
    ],
)
def test_credential(authorization, x_api_key, expected):
    assert credential(authorization, x_api_key) == expected
