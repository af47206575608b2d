"""BYOK storage rules against a real SQLite file and a real PostgreSQL database (the store tests
run once per backend): AES-256-GCM bound to customer, provider and master key version; no
plaintext on disk; delete and cascade at once; rotation; the cache."""
from __future__ import annotations

import asyncio

import anyio
import pytest

from kraken.accounts import byok, masterkey, service
from kraken.accounts.byok import ByokKeyUnusable
from kraken.accounts.byok_cache import ByokCache
from kraken.accounts.masterkey import Keyring, KeyringError
from kraken.accounts.validation import NotFoundError, ValidationError
from backends import backend, pg_server, store  # noqa: F401  (fixtures: once per backend)

pytestmark = pytest.mark.anyio

SECRET_A = "sk-byok-customer-a-PLAINTEXT-4f1e9d2c7b"
SECRET_B = "sk-ant-byok-customer-b-PLAINTEXT-88aa31"
V1 = masterkey.new_entry(1)
V2 = masterkey.new_entry(2)


def ring(*entries: str) -> Keyring:
    return Keyring.parse("\n".join(entries), "<test>")


async def customer(store, email: str) -> str:
    return (await service.create_customer(store, email)).id


async def raw_rows(store) -> list[tuple]:
    rows = await store.fetch_all("SELECT customer_id, provider, key_version, nonce, ciphertext"
                                 " FROM byok_keys ORDER BY customer_id, provider")
    return [(c, p, v, bytes(n), bytes(ct)) for c, p, v, n, ct in rows]


# ---- crypto ---------------------------------------------------------------------------

def test_each_encryption_uses_a_fresh_nonce_and_round_trips():
    keys = ring(V1)
    one = byok.seal(keys, "cus_a", "openai", SECRET_A)
    two = byok.seal(keys, "cus_a", "openai", SECRET_A)
    assert len(one.nonce) == 12 and one.nonce != two.nonce and one.ciphertext != two.ciphertext
    assert SECRET_A.encode() not in one.ciphertext
    assert byok.unseal(keys, "cus_a", "openai", one) == SECRET_A


@pytest.mark.parametrize("customer_id, provider", [("cus_b", "openai"), ("cus_a", "anthropic")])
def test_ciphertext_moved_to_another_customer_or_provider_fails(customer_id, provider):
    keys = ring(V1)
    sealed = byok.seal(keys, "cus_a", "openai", SECRET_A)
    with pytest.raises(ByokKeyUnusable) as err:
        byok.unseal(keys, customer_id, provider, sealed)
    assert SECRET_A not in str(err.value) and err.value.status == 503


def test_relabelled_version_fails():
    keys = ring(V1, V2)
    sealed = byok.seal(keys, "cus_a", "openai", SECRET_A)
    assert sealed.key_version == 2  # the newest version encrypts
    relabelled = byok.Sealed(1, sealed.nonce, sealed.ciphertext)
    with pytest.raises(ByokKeyUnusable):
        byok.unseal(keys, "cus_a", "openai", relabelled)


# ---- keyring --------------------------------------------------------------------------

def test_keyring_file_must_be_private(tmp_path):
    path = tmp_path / "master.keys"
    path.write_text(f"# kraken byok keys\n{V1}\n{V2}\n")
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        masterkey.load(str(path), "")
    path.chmod(0o600)
    keys = masterkey.load(str(path), "")
    assert sorted(keys.keys) == [1, 2] and keys.newest == 2


def test_keyring_from_environment_and_file_wins(tmp_path):
    assert masterkey.load("", "") is None
    assert masterkey.load("", f"{V1},{V2}").newest == 2
    path = tmp_path / "m"
    path.write_text(V1)
    path.chmod(0o600)
    assert masterkey.load(str(path), V2).newest == 1


@pytest.mark.parametrize("text, message", [
    ("abc", "not 'version:base64key'"),
    ("0:" + V1.split(":")[1], "at least 1"),
    ("1:%%%%", "not 'version:base64key'"),
    ("1:c2hvcnQ=", "32 bytes"),
    (f"{V1}\n{V1}", "appears twice"),
    ("# nothing", "no keys"),
])
def test_bad_keyring_errors_name_the_entry_not_the_key(text, message):
    with pytest.raises(KeyringError, match=message) as err:
        Keyring.parse(text, "KRAKEN_BYOK_MASTER_KEY")
    assert V1.split(":")[1] not in str(err.value)


# ---- storage --------------------------------------------------------------------------

async def test_set_stores_only_ciphertext_and_the_files_never_hold_the_key(store, backend):
    keys = ring(V1)
    a = await customer(store, "a@example.com")
    entry = await byok.set_key(store, keys, a, "openai", SECRET_A)
    assert (entry.customer_id, entry.provider, entry.key_version) == (a, "openai", 1)
    await byok.set_key(store, keys, a, "openai", SECRET_B)  # replaced, still one row
    (row,) = await raw_rows(store)
    assert row[:3] == (a, "openai", 1)
    assert await byok.keys_of(store, keys, a) == {"openai": SECRET_B}
    listed = await byok.list_keys(store, a)
    assert [e.as_dict()["provider"] for e in listed] == ["openai"]
    assert SECRET_B not in repr(listed)
    for name, blob in await backend.blobs(store):
        for secret in (SECRET_A, SECRET_B):
            assert secret.encode() not in blob, name


@pytest.mark.parametrize("provider, api_key, field", [
    ("openai", "", "api_key"),
    ("openai", "has space " + SECRET_A, "api_key"),
    ("openai", "x" * 2000, "api_key"),
    ("openai", 42, "api_key"),
    ("mock", SECRET_A, "provider"),
    ("openai_compatible", SECRET_A, "provider"),
    ("'; DROP TABLE byok_keys; --", SECRET_A, "provider"),
])
async def test_bad_input_names_the_field_and_never_echoes_the_key(store, provider, api_key, field):
    a = await customer(store, "a@example.com")
    with pytest.raises(ValidationError) as err:
        await byok.set_key(store, ring(V1), a, provider, api_key)
    assert err.value.field == field and err.value.status == 400
    assert SECRET_A not in err.value.message and "x" * 50 not in err.value.message
    assert await byok.list_keys(store) == []


async def test_unknown_customer_is_not_found(store):
    with pytest.raises(NotFoundError) as err:
        await byok.set_key(store, ring(V1), "cus_nobody'--", "openai", SECRET_A)
    assert err.value.field == "customer_id" and SECRET_A not in err.value.message


async def test_delete_removes_the_row_and_bumps_the_generation(store):
    a = await customer(store, "a@example.com")
    await byok.set_key(store, ring(V1), a, "openai", SECRET_A)
    generation, stored = await byok.state(store)
    assert stored == 1
    await byok.delete_key(store, a, "openai")
    assert await byok.list_keys(store) == []
    assert await byok.state(store) == (generation + 1, 0)
    with pytest.raises(NotFoundError):
        await byok.delete_key(store, a, "openai")


async def test_account_deletion_cascades_to_byok_keys(store):
    keys = ring(V1)
    a = await customer(store, "a@example.com")
    b = await customer(store, "b@example.com")
    await byok.set_key(store, keys, a, "openai", SECRET_A)
    await byok.set_key(store, keys, a, "anthropic", SECRET_A)
    await byok.set_key(store, keys, b, "openai", SECRET_B)
    generation, _ = await byok.state(store)
    await service.delete_customer(store, a)
    assert [e.customer_id for e in await byok.list_keys(store)] == [b]
    assert await byok.state(store) == (generation + 2, 1)  # triggers fire on cascade too


async def test_row_copied_to_another_customer_does_not_decrypt(store, backend):
    keys = ring(V1)
    a = await customer(store, "a@example.com")
    b = await customer(store, "b@example.com")
    await byok.set_key(store, keys, a, "openai", SECRET_A)
    async with store.transaction() as tx:  # behind the accounts code's back
        await tx.execute(backend.sql(
            "INSERT INTO byok_keys SELECT ?, provider, key_version, nonce, ciphertext,"
            " created_at, updated_at FROM byok_keys WHERE customer_id = ?"), (b, a))
    got = await byok.keys_of(store, keys, b)
    assert isinstance(got["openai"], ByokKeyUnusable)
    assert await byok.keys_of(store, keys, a) == {"openai": SECRET_A}


async def test_rotate_reencrypts_everything_under_the_newest_version(store):
    a = await customer(store, "a@example.com")
    b = await customer(store, "b@example.com")
    await byok.set_key(store, ring(V1), a, "openai", SECRET_A)
    await byok.set_key(store, ring(V1), b, "anthropic", SECRET_B)
    before = await raw_rows(store)
    report = await byok.rotate(store, ring(V1, V2))
    assert report.as_dict() == {"newest_version": 2, "rotated": 2, "already_current": 0,
                                "before": {"1": 2}}
    after = await raw_rows(store)
    assert [r[2] for r in after] == [2, 2]
    assert all(x[3] != y[3] and x[4] != y[4] for x, y in zip(before, after))
    only_v2 = ring(V2)  # the old version can now be removed
    assert await byok.keys_of(store, only_v2, a) == {"openai": SECRET_A}
    assert await byok.keys_of(store, only_v2, b) == {"anthropic": SECRET_B}
    again = await byok.rotate(store, only_v2)
    assert (again.rotated, again.current) == (0, 2)


async def test_rotate_without_the_old_version_changes_nothing(store):
    a = await customer(store, "a@example.com")
    b = await customer(store, "b@example.com")
    await byok.set_key(store, ring(V2), a, "openai", SECRET_A)  # already current
    await byok.set_key(store, ring(V1), b, "openai", SECRET_B)  # needs v1
    before = await raw_rows(store)
    with pytest.raises(ByokKeyUnusable, match="version 1 is not configured") as err:
        await byok.rotate(store, ring(V2))
    assert b in err.value.message and SECRET_B not in err.value.message
    assert await raw_rows(store) == before


# ---- the in-memory cache -----------------------------------------------------------------

class CountingStore:
    """The real store, counting the reads that reach it."""

    def __init__(self, store):
        self.store = store
        self.accounts = store.accounts  # the backend's statements, run through this wrapper
        self.reads = 0

    async def fetch_all(self, sql, params=()):
        self.reads += 1
        return await self.store.fetch_all(sql, params)


async def test_cache_hits_do_no_io_and_misses_load_once(store):
    keys = ring(V1)
    a = await customer(store, "a@example.com")
    await byok.set_key(store, keys, a, "openai", SECRET_A)
    counting = CountingStore(store)
    cache = ByokCache(counting, keys)
    await cache.poll()
    counting.reads = 0
    assert cache.keys_now(a) is None  # a miss: keys_for must load
    results = await asyncio.gather(*(cache.keys_for(a) for _ in range(50)))
    assert all(r == {"openai": SECRET_A} for r in results)
    assert counting.reads == 1  # single flight
    for _ in range(100):
        assert (await cache.keys_for(a))["openai"] == SECRET_A
        assert cache.keys_now(a)["openai"] == SECRET_A  # a hit needs no await
    assert counting.reads == 1  # hits: memory only


async def test_no_lookups_while_no_key_is_stored(store):
    a = await customer(store, "a@example.com")
    counting = CountingStore(store)
    cache = ByokCache(counting, ring(V1))
    await cache.poll()
    counting.reads = 0
    assert await cache.keys_for(a) == {} and cache.keys_now(a) == {}
    assert counting.reads == 0 and len(cache) == 0


async def test_cache_is_bounded_lru_with_ttl(store):
    keys = ring(V1)
    ids = [await customer(store, f"c{i}@example.com") for i in range(3)]
    for cid in ids:
        await byok.set_key(store, keys, cid, "openai", SECRET_A)
    now = [0.0]
    counting = CountingStore(store)
    cache = ByokCache(counting, keys, max_entries=2, ttl_s=10, clock=lambda: now[0])
    await cache.poll()
    for cid in ids:
        await cache.keys_for(cid)
    assert len(cache) == 2
    counting.reads = 0
    await cache.keys_for(ids[2])
    assert counting.reads == 0
    await cache.keys_for(ids[0])  # evicted as least recently used
    assert counting.reads == 1
    now[0] = 11.0  # expired
    await cache.keys_for(ids[0])
    assert counting.reads == 2


async def test_a_change_by_another_connection_is_seen_at_the_next_poll(store, backend):
    keys = ring(V1)
    a = await customer(store, "a@example.com")
    await byok.set_key(store, keys, a, "openai", SECRET_A)
    cache = ByokCache(store, keys, poll_interval_s=0.05)
    other = await backend.open()  # as the CLI, another worker or another host would
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(cache.run)
            assert (await cache.keys_for(a))["openai"] == SECRET_A
            await byok.set_key(other, keys, a, "openai", SECRET_B)
            with anyio.fail_after(1):
                while (await cache.keys_for(a)).get("openai") != SECRET_B:
                    await anyio.sleep(0.01)
            await byok.delete_key(other, a, "openai")
            with anyio.fail_after(1):
                while await cache.keys_for(a):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    finally:
        await other.close()


async def test_while_the_store_is_away_cached_keys_serve_and_a_miss_is_a_503(store, backend):
    """A database restart must not fail every request: what is cached keeps serving (bounded
    by its TTL); a customer not cached gets a retryable 503, never the operator's key."""
    from kraken import errors, metrics

    keys = ring(V1)
    a, b = await customer(store, "a@example.com"), await customer(store, "b@example.com")
    await byok.set_key(store, keys, a, "openai", SECRET_A)
    await byok.set_key(store, keys, b, "openai", SECRET_B)
    away = await backend.open()  # this cache's own connection, closed as an outage would
    cache = ByokCache(away, keys, poll_interval_s=0.01)
    failed = metrics.BYOK_ERRORS.labels("poll")
    async with anyio.create_task_group() as tg:
        await tg.start(cache.run)
        assert (await cache.keys_for(a))["openai"] == SECRET_A
        before = failed._value.get()
        await away.close()
        with anyio.fail_after(5):
            while failed._value.get() < before + 2:
                await anyio.sleep(0.01)
        assert (await cache.keys_for(a))["openai"] == SECRET_A
        with pytest.raises(errors.Overloaded) as refused:
            await cache.keys_for(b)
        assert refused.value.status == 503 and SECRET_B not in str(refused.value)
        tg.cancel_scope.cancel()


async def test_while_the_store_is_away_no_stored_keys_still_means_no_lookup(store, backend):
    from kraken import metrics

    a = await customer(store, "a@example.com")
    away = await backend.open()
    cache = ByokCache(away, ring(V1), poll_interval_s=0.01)
    failed = metrics.BYOK_ERRORS.labels("poll")
    async with anyio.create_task_group() as tg:
        await tg.start(cache.run)
        before = failed._value.get()
        await away.close()
        with anyio.fail_after(5):
            while failed._value.get() < before + 2:
                await anyio.sleep(0.01)
        assert await cache.keys_for(a) == {}  # served from the last count, no store read
        tg.cancel_scope.cancel()


async def test_keys_without_a_keyring_are_unusable_not_skipped(store):
    a = await customer(store, "a@example.com")
    await byok.set_key(store, ring(V1), a, "openai", SECRET_A)
    cache = ByokCache(store, None)
    await cache.poll()
    got = await cache.keys_for(a)
    assert isinstance(got["openai"], ByokKeyUnusable)


# ---- request builders ----------------------------------------------------------------------

def test_request_builders_take_the_customer_key_instead_of_the_operators():
    from kraken.config import ProviderConfig
    from kraken.providers.anthropic import AnthropicFamily
    from kraken.providers.openai_compat import OpenAICompat

    oa = OpenAICompat(ProviderConfig(name="o", kind="openai", api_key="sk-operator-0001"),
                      "/v1", "api.example")
    headers = oa.chat_request({"messages": []}, "m", api_key=SECRET_A).headers
    assert [v for k, v in headers if k == b"authorization"] == [b"Bearer " + SECRET_A.encode()]
    headers = oa.chat_request({"messages": []}, "m").headers
    assert [v for k, v in headers if k == b"authorization"] == [b"Bearer sk-operator-0001"]
    an = AnthropicFamily(ProviderConfig(name="c", kind="anthropic", api_key="sk-ant-operator"),
                         "/v1", "api.example")
    headers = an.messages_request({"messages": []}, "m", api_key=SECRET_B).headers
    assert [v for k, v in headers if k == b"x-api-key"] == [SECRET_B.encode()]
    shaped = an.messages_request({"messages": []}, "m").headers
    assert [v for k, v in an.authorized(shaped, SECRET_B) if k == b"x-api-key"] == [SECRET_B.encode()]



async def test_a_key_set_on_another_host_during_a_rotation_is_kept(pg_server):  # noqa: F811
    """PostgreSQL: the rotation reads every ciphertext, re-encrypts, then writes them back in one
    transaction. A customer's new key stored by another host in between must not be replaced by
    the re-encrypted old one (READ COMMITTED alone lets the rotation's UPDATE overwrite it)."""
    from kraken.store.accounts_sql import AccountsRepository
    from kraken.store.postgres import PostgresStore

    dsn = pg_server.create_database()
    a, b = [await PostgresStore.open(dsn, pool_size=2) for _ in range(2)]
    real_reseal = AccountsRepository.reseal_byok
    try:
        cid = await customer(a, "rotating@example.com")
        await byok.set_key(a, ring(V1), cid, "openai", SECRET_A)
        read, b_done = asyncio.Event(), asyncio.Event()

        async def reseal(self, db, rows):  # the rotation has read and re-encrypted: held until
            read.set()                     # host B's write waits for it or has committed
            async with asyncio.timeout(10):
                while not b_done.is_set() and not await a.fetch_all(
                        "SELECT 1 FROM pg_locks WHERE NOT granted"):
                    await asyncio.sleep(0.01)
            await real_reseal(self, db, rows)

        AccountsRepository.reseal_byok = reseal
        rotating = asyncio.ensure_future(byok.rotate(a, ring(V1, V2)))
        await read.wait()
        try:
            await byok.set_key(b, ring(V1, V2), cid, "openai", SECRET_B)
        finally:
            b_done.set()
        await rotating
        assert await byok.keys_of(a, ring(V1, V2), cid) == {"openai": SECRET_B}
    finally:
        AccountsRepository.reseal_byok = real_reseal
        await a.close()
        await b.close()
