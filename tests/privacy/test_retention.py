"""Retention: request metadata is kept by default; audit entries go after ``audit_days``,
purged by a background task, and the chain still verifies afterwards."""
from __future__ import annotations

import sqlite3
import time

import anyio
import pytest
from adminkit import insert_requests
from harness import db_rows, kraken_mapping, running_kraken, running_mock, wait_for

from kraken import audit, config
from kraken.config import RetentionConfig
from kraken.privacy.retention import DAY_S, purge_once
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def test_defaults_follow_the_policy():
    cfg = config.from_mapping({}, env={})
    assert (cfg.retention.request_days, cfg.retention.audit_days) == (0, 90)
    assert cfg.retention.keep_billing_records is False
    with pytest.raises(config.ConfigError, match="retention.audit_days"):
        config.from_mapping({"retention": {"audit_days": -1}}, env={})
    with pytest.raises(config.ConfigError, match="admin.token_hash"):
        config.from_mapping({"admin": {"token_hash": "secret-in-plain"}}, env={})
    with pytest.raises(config.ConfigError, match="admin.port"):
        config.from_mapping({"admin": {"token_hash": "a" * 64, "port": 8080}}, env={})


async def _seed(db, now: float) -> None:
    store = await SqliteStore.open(str(db))
    try:
        for days in (200, 100, 91, 10, 1):
            await audit.record(store, actor="cli:test", action="customer.update",
                               target="cus_x", now=now - days * DAY_S)
    finally:
        await store.close()
    await insert_requests(db, "cus_x", 3, start_ts=now - 400 * DAY_S, prefix="old")
    await insert_requests(db, "cus_x", 2, start_ts=now - DAY_S, prefix="new")


async def test_purge_once_keeps_requests_by_default_and_drops_old_audit(tmp_path):
    db, now = tmp_path / "k.db", time.time()
    await _seed(db, now)
    store = await SqliteStore.open(str(db))
    try:
        done = await purge_once(store, RetentionConfig(), now=now)
        assert done == {"audit_entries": 3, "requests": 0}
        entries = await audit.list_entries(store)
        assert [e.action for e in entries] == ["customer.update", "customer.update", "retention.purge"]
        assert (await audit.verify(store)).ok
        again = await purge_once(store, RetentionConfig(), now=now)
        assert again == {"audit_entries": 0, "requests": 0}
        assert len(await audit.list_entries(store)) == 3  # nothing purged, nothing logged
    finally:
        await store.close()
    assert len(db_rows(db)) == 5


async def test_request_days_purges_only_older_metadata(tmp_path):
    db, now = tmp_path / "k.db", time.time()
    await _seed(db, now)
    store = await SqliteStore.open(str(db))
    try:
        done = await purge_once(store, RetentionConfig(request_days=30, audit_days=0), now=now)
    finally:
        await store.close()
    assert done == {"audit_entries": 0, "requests": 3}
    assert sorted(r["request_id"][:3] for r in db_rows(db)) == ["new", "new"]


async def test_the_background_task_purges_in_a_running_kraken(tmp_path):
    now = time.time()
    await _seed(tmp_path / "kraken.db", now)
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port,
                             retention={"audit_days": 30, "request_days": 100,
                                        "purge_interval_s": 0.1})
        async with running_kraken(doc) as k:
            await wait_for(lambda: len(db_rows(k.db_path)) == 2)
            store = await SqliteStore.open(str(k.db_path))
            try:
                async def actions() -> list[str]:
                    return [e.action for e in await audit.list_entries(store)]

                with anyio.fail_after(10):  # the first pass runs one interval after startup
                    while (await actions())[-1:] != ["retention.purge"]:
                        await anyio.sleep(0.01)
                assert await actions() == ["customer.update", "customer.update", "retention.purge"]
                assert (await audit.verify(store)).ok
            finally:
                await store.close()


async def test_expired_sign_up_links_go_without_any_sign_up_activity(tmp_path):
    """A link never used keeps an address that belongs to no customer: it goes once expired
    (README: deleted on use or expiry), not only when someone signs up again; the sign-up
    routes may even be off. The purge runs with nothing else to retain."""
    now = time.time()
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    try:
        async with store.transaction() as tx:
            await tx.signup.insert(tx, "e" * 64, "never-confirmed@example.com", now - 2000,
                                   now - 1100)
            await tx.signup.insert(tx, "f" * 64, "still-deciding@example.com", now, now + 900)
    finally:
        await store.close()
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port,
                             retention={"audit_days": 0, "purge_interval_s": 0.1})
        async with running_kraken(doc) as k:
            def links() -> list[tuple]:
                conn = sqlite3.connect(k.db_path)
                try:
                    return conn.execute("SELECT email FROM signup_links").fetchall()
                finally:
                    conn.close()

            await wait_for(lambda: len(links()) == 1)  # the first pass: one interval after start
            assert links() == [("still-deciding@example.com",)]
