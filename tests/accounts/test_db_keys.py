"""Database-backed Kraken API keys through a real ``kraken serve`` process: a created key
works, revoked/deleted/expired keys get the one uniform 401 within a second, the model
allow-list gives 403, bcrypt runs once per TTL, typos never reach the database, and neither
the key, its id nor its hash shows up in logs, files or error bodies. The verifier's lookups
without a process (principal, stale rows, expiry, bounds, purge) run once per backend."""
from __future__ import annotations

import json
import re
import time

import anyio
import pytest

from backends import any_store, backend, pg_server  # noqa: F401  (fixtures: once per backend)
from harness import TEST_KEY, db_rows, http, running_mock, wait_for
from keyproc import chat, kraken_process, metric
from kraken.accounts import service
from kraken.accounts.keystore import DbKeySource
from kraken.accounts.revocation import RevocationWatcher
from kraken.config import AuthConfig
from kraken.errors import KrakenError, Unauthorized
from kraken.policy.auth import KeyVerifier, check_model_allowed
from kraken.accounts.keys import checksum
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(str(tmp_path / "kraken.db"))
    yield s
    await s.close()


async def _customer(store, email="dev@example.com", **kw):
    return await service.create_customer(store, email, "Dev", **kw)


async def refused_within(port: int, key: str, seconds: float = 1.0) -> None:
    """Poll until ``key`` gets a 401 (bounded: fails the test after ``seconds``)."""
    with anyio.fail_after(seconds):
        while (await chat(port, key)).status != 401:
            await anyio.sleep(0.02)


def _typo(key: str) -> str:
    ch = "a" if key[-10] != "a" else "b"
    return key[:-10] + ch + key[-9:]


async def test_created_key_works_then_revoked_and_deleted_keys_get_the_uniform_401(tmp_path,
                                                                                    store):
    cus = await _customer(store)
    a = await service.create_key(store, cus.id, name="ci", rounds=4)
    b = await service.create_key(store, cus.id, rounds=4)
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        for key in (a.plaintext, b.plaintext, a.plaintext):
            ok = await chat(kp.port, key)
            assert ok.status == 200, ok.body
        wrong = await chat(kp.port, "kr_live_nokeyhere_" + "x" * 24)
        assert wrong.status == 401
        await service.revoke_key(store, a.key.id)
        await refused_within(kp.port, a.plaintext)
        await service.delete_key(store, b.key.id)
        await refused_within(kp.port, b.plaintext)
        refused = [await chat(kp.port, k) for k in (a.plaintext, b.plaintext, _typo(a.plaintext))]
        assert {(r.status, r.body) for r in refused} == {(wrong.status, wrong.body)}
        assert (await chat(kp.port, TEST_KEY)).status == 200  # config keys keep working
    rows = db_rows(tmp_path / "kraken.db")
    assert [r["customer_id"] for r in rows if r["status"] == 200].count(cus.id) >= 3


async def test_expired_key_is_refused(tmp_path, store):
    cus = await _customer(store)
    soon = await service.create_key(store, cus.id, expires_at=time.time() + 1.5, rounds=4)
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        first = await chat(kp.port, soon.plaintext)
        assert first.status == 200 or time.time() > soon.key.expires_at
        await refused_within(kp.port, soon.plaintext, seconds=5)
        assert (await service.get_key(store, soon.key.id)).status() == "expired"


async def test_model_allow_list_gives_403_and_changes_apply_within_a_second(tmp_path, store):
    cus = await _customer(store)
    only = await service.create_key(store, cus.id, allowed_models=["mock-gpt"], rounds=4)
    async with running_mock() as mock, kraken_process(
            tmp_path, mock.port, models={"fast": ["mockai/mock-gpt"]}) as kp:
        assert (await chat(kp.port, only.plaintext, "mock-gpt")).status == 200
        denied = await chat(kp.port, only.plaintext, "fast")
        assert denied.status == 403
        err = denied.json()["error"]
        assert (err["code"], err["type"]) == ("model_not_allowed", "permission_error")
        assert only.key.id not in denied.body.decode()
        assert (await chat(kp.port, TEST_KEY, "fast")).status == 200  # config key: no list
        await service.update_key(store, only.key.id, allowed_models=["fast", "mock-gpt"])
        with anyio.fail_after(1.0):
            while (await chat(kp.port, only.plaintext, "fast")).status != 200:
                await anyio.sleep(0.02)


async def test_bcrypt_runs_once_within_the_ttl_and_typos_never_reach_the_database(tmp_path,
                                                                                   store):
    cus = await _customer(store)
    key = (await service.create_key(store, cus.id, rounds=4)).plaintext
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        for _ in range(5):
            assert (await chat(kp.port, key)).status == 200

        async def count(outcome: str) -> float:
            return await metric(kp.port, "kraken_auth_cache_total", {"outcome": outcome})

        assert (await count("miss"), await count("db_lookup"), await count("hit")) == (1, 1, 4)
        # A typo fails the checksum: refused with neither a lookup nor bcrypt.
        for _ in range(3):
            assert (await chat(kp.port, _typo(key))).status == 401
        assert (await count("miss"), await count("db_lookup")) == (1, 1)
        # A well-formed key for an unknown id is looked up once, then cached negatively.
        body = "kr_live_" + "q" * 16 + "_" + "Z" * 32
        made_up = body + checksum(body)
        for _ in range(3):
            assert (await chat(kp.port, made_up)).status == 401
        assert (await count("miss"), await count("db_lookup")) == (1, 2)
        assert await count("negative_hit") == 2


async def test_key_id_secret_and_hash_never_appear_in_logs_files_or_errors(tmp_path, store):
    cus = await _customer(store)
    live = await service.create_key(store, cus.id, rounds=4)
    gone = await service.create_key(store, cus.id, rounds=4)
    await service.revoke_key(store, gone.key.id)
    (stored_hash,) = (await store.fetch_all("SELECT hash FROM api_keys WHERE id = ?",
                                            (live.key.id,)))[0]
    replies = []
    async with running_mock() as mock, kraken_process(tmp_path, mock.port,
                                                      args=["--log-level", "DEBUG"]) as kp:
        for key in (live.plaintext, gone.plaintext, _typo(live.plaintext), live.plaintext + "x"):
            replies.append(await chat(kp.port, key))
        replies.append(await chat(kp.port, live.plaintext, "no-such-model"))
    assert [r.status for r in replies][:4] == [200, 401, 401, 401]
    log = (tmp_path / "k.log").read_bytes()
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*")
                     if p.is_file() and p.suffix not in (".toml",))
    secrets = [live.plaintext, gone.plaintext, stored_hash]
    ids = [live.key.id, gone.key.id]
    for blob, where in [(log, "log")] + [(r.body + json.dumps(r.headers).encode(), "reply")
                                         for r in replies]:
        for s in secrets + ids:
            assert s.encode() not in blob, (where, s)
    for s in (live.plaintext, gone.plaintext):  # the database holds only the hash
        assert s.encode() not in files
    assert not re.search(rb"kr_(live|test)_[a-z0-9]{16}_", log)


async def test_sql_metacharacters_in_the_authorization_header_get_the_uniform_401(tmp_path,
                                                                                   store):
    cus = await _customer(store)
    created = await service.create_key(store, cus.id, rounds=4)
    body = "kr_live_" + "a" * 16 + "_" + "B" * 32
    hostile = [
        "kr_live_' OR '1'='1_" + "A" * 30,
        "kr_live_x'); DROP TABLE api_keys;--_" + "A" * 30,
        f"kr_live_{created.key.id}_' OR 1=1 --" + "A" * 24,
        f"kr_live_{created.key.id}\"; DELETE FROM customers; --",
        "' UNION SELECT hash FROM api_keys --",
        body + checksum(body) + "' OR 1=1",
    ]
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        reference = await chat(kp.port, "kr_live_nothere_" + "x" * 24)
        for value in hostile:
            for header in ({"Authorization": f"Bearer {value}"}, {"x-api-key": value}):
                reply = await http(kp.port, "POST", "/v1/chat/completions",
                                   b'{"model":"mock-gpt","messages":[]}', header)
                assert (reply.status, reply.body) == (reference.status, reference.body), value
        assert (await chat(kp.port, created.plaintext)).status == 200
    assert len(await service.list_keys(store)) == 1
    assert (await service.get_customer(store, cus.id)).email == "dev@example.com"


# -- the verifier with the database source, in process ---------------------------------------

async def test_principal_carries_plan_opt_out_allow_list_and_follows_changes(any_store):
    cus = await _customer(any_store, plan="gold")
    created = await service.create_key(any_store, cus.id, allowed_models=["a", "b"], rpm=5,
                                       tpm=50, max_concurrent=2, token_budget=1000,
                                       spend_budget_usd=2.5, rounds=4)
    verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=DbKeySource(any_store))
    watcher = RevocationWatcher(any_store, verifier)
    await watcher.start()
    try:
        p = await verifier.verify(created.plaintext.encode())
        assert (p.key_id, p.customer_id, p.rpm, p.tpm, p.max_concurrent) == \
            (created.key.id, cus.id, 5, 50, 2)
        assert (p.plan, p.opted_out, p.allowed_models) == ("gold", False, frozenset({"a", "b"}))
        assert (p.token_budget, p.spend_budget_usd) == (1000, 2.5)
        check_model_allowed(p, "a")
        with pytest.raises(KrakenError) as info:
            check_model_allowed(p, "c")
        assert (info.value.status, info.value.code) == (403, "model_not_allowed")
        await service.update_customer(any_store, cus.id, plan="basic", opted_out=True)
        assert verifier.lookup_cached(created.plaintext.encode()) == p  # until the poll
        assert await watcher.poll_once() == 1
        assert verifier.lookup_cached(created.plaintext.encode()) is None
        p2 = await verifier.verify(created.plaintext.encode())
        assert (p2.plan, p2.opted_out) == ("basic", True)
        await service.revoke_key(any_store, created.key.id)
        await watcher.poll_once()
        with pytest.raises(Unauthorized):
            await verifier.verify(created.plaintext.encode())
    finally:
        verifier.close()


async def test_a_revocation_during_the_lookup_is_not_cached_stale(any_store):
    """The row read before a revocation must not outlive the eviction that followed it."""
    cus = await _customer(any_store)
    created = await service.create_key(any_store, cus.id, rounds=4)
    source = DbKeySource(any_store)
    gate = anyio.Event()
    proceed = anyio.Event()

    class SlowSource:
        async def fetch(self, key_id):
            row = await source.fetch(key_id)
            gate.set()
            await proceed.wait()
            return row

    verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=SlowSource())
    try:
        async with anyio.create_task_group() as tg:
            results = []

            async def attempt():
                try:
                    results.append(await verifier.verify(created.plaintext.encode()))
                except Unauthorized:
                    results.append(None)

            tg.start_soon(attempt)
            await gate.wait()
            await service.revoke_key(any_store, created.key.id)
            verifier.evict([created.key.id])
            proceed.set()
        # The in-flight request was served from a row read before the revocation; nothing
        # was cached, so the next one reads the row again and is refused.
        await wait_for(lambda: results)
        verifier._source = source
        with pytest.raises(Unauthorized):
            await verifier.verify(created.plaintext.encode())
    finally:
        verifier.close()


async def test_a_cached_key_stops_working_at_its_expiry(any_store):
    cus = await _customer(any_store)
    now = [time.time()]
    created = await service.create_key(any_store, cus.id, expires_at=now[0] + 60, rounds=4)
    verifier = KeyVerifier([], AuthConfig(cache_ttl_s=300), source=DbKeySource(any_store),
                           wall_clock=lambda: now[0])
    try:
        token = created.plaintext.encode()
        assert (await verifier.verify(token)).key_id == created.key.id
        assert verifier.lookup_cached(token) is not None
        now[0] += 61  # the verifier's wall clock passes expires_at; the cache must not outlive it
        assert verifier.lookup_cached(token) is None
    finally:
        verifier.close()


async def test_row_caches_are_bounded_and_a_failing_store_is_a_503(any_store):
    cus = await _customer(any_store)
    keys = [await service.create_key(any_store, cus.id, rounds=4) for _ in range(3)]
    verifier = KeyVerifier([], AuthConfig(cache_max=2), source=DbKeySource(any_store))
    try:
        for k in keys:
            await verifier.verify(k.plaintext.encode())
        assert len(verifier._db) == 2 and len(verifier._cache) == 2
    finally:
        verifier.close()

    class BrokenSource:
        async def fetch(self, key_id):
            raise OSError("disk gone")

    broken = KeyVerifier([], AuthConfig(), source=BrokenSource())
    try:
        from kraken.errors import Overloaded

        with pytest.raises(Overloaded) as info:
            await broken.verify(keys[0].plaintext.encode())
        assert info.value.status == 503 and keys[0].key.id not in info.value.message
    finally:
        broken.close()


async def test_key_events_older_than_an_hour_are_purged(any_store, backend):
    cus = await _customer(any_store)
    kid = (await service.create_key(any_store, cus.id, rounds=4)).key.id
    await service.revoke_key(any_store, kid)
    async with any_store.transaction() as tx:
        await tx.execute(backend.sql("INSERT INTO key_events (key_id, ts) VALUES (?, ?)"),
                         ("old", time.time() - 7200))
    verifier = KeyVerifier([], AuthConfig(), source=DbKeySource(any_store))
    watcher = RevocationWatcher(any_store, verifier)
    try:
        await watcher.start()
        watcher._next_purge = 0.0  # due now instead of a minute after start
        await watcher._purge()
        assert await any_store.fetch_all("SELECT key_id FROM key_events") == [(kid,)]
    finally:
        verifier.close()


async def test_a_watcher_started_after_a_purge_takes_no_purged_number_for_a_late_one(any_store):
    """Skipped numbers are looked for again at every poll (late commits); the ones purged
    before a watcher started are not skipped, they are gone, and must cost no lookups."""
    cus = await _customer(any_store)
    first, second = [await service.create_key(any_store, cus.id, rounds=4) for _ in range(2)]
    await service.revoke_key(any_store, first.key.id)
    async with any_store.transaction() as tx:
        await tx.accounts.purge_key_events(tx, time.time() + 60)  # every event gone
    verifier = KeyVerifier([], AuthConfig(), source=DbKeySource(any_store))
    watcher = RevocationWatcher(any_store, verifier)
    try:
        await watcher.start()
        await service.revoke_key(any_store, second.key.id)
        assert await watcher.poll_once() == 1
        assert watcher._gaps == {}
    finally:
        verifier.close()
