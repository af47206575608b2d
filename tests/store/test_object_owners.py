"""Who created each file and batch (``store.owners``), once per backend: a fresh SQLite file,
or a fresh database on this module's real PostgreSQL; erasure deletes a customer's rows and
export lists its ids."""
from __future__ import annotations

import anyio
import orjson
import pytest

from postgres_server import StoreBackend, pg_server  # noqa: F401  (module-scoped fixture)
from kraken.accounts import service
from kraken.privacy.erase import erase_customer
from kraken.privacy.export import export_stream

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> StoreBackend:
    if request.param == "sqlite":
        return StoreBackend("sqlite", str(tmp_path / "owners.db"))
    return StoreBackend("postgres", request.getfixturevalue("pg_server").create_database())


@pytest.fixture
async def store(backend):
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()


async def test_claim_owner_owned_and_a_reclaim_moves_the_id(store):
    owners = store.owners
    async with store.transaction() as tx:
        await owners.claim(tx, "p1", "file", ["file-1", "file-2"], "cus_a", 1.0)
        await owners.claim(tx, "p1", "batch", ["batch-1"], "cus_b", 1.0)
        await owners.claim(tx, "p2", "file", ["file-1"], "cus_b", 1.0)  # same id, other provider
    assert await owners.owner(store, "p1", "file", "file-1") == "cus_a"
    assert await owners.owner(store, "p2", "file", "file-1") == "cus_b"
    assert await owners.owner(store, "p1", "batch", "file-1") is None
    page = ["file-1", "file-2", "file-3", "batch-1"]
    assert await owners.owned(store, "p1", "file", "cus_a", page) == {"file-1", "file-2"}
    many = [f"f{i}" for i in range(250)]  # more than one statement's worth
    async with store.transaction() as tx:
        await owners.claim(tx, "p3", "file", many, "cus_a", 1.0)
    assert await owners.owned(store, "p3", "file", "cus_a", many + many) == set(many)
    assert await owners.owned(store, "p1", "file", "cus_b", page) == set()
    async with store.transaction() as tx:
        await owners.claim(tx, "p1", "file", ["file-2"], "cus_b", 2.0)
    assert await owners.owner(store, "p1", "file", "file-2") == "cus_b"


async def test_export_lists_and_erasure_deletes_the_customers_ids(store):
    a = (await service.create_customer(store, "owner-a@example.com", "A")).id
    b = (await service.create_customer(store, "owner-b@example.com", "B")).id
    async with store.transaction() as tx:
        await store.owners.claim(tx, "p1", "file", ["file-a"], a, 1.0)
        await store.owners.claim(tx, "p1", "batch", ["batch-a"], a, 1.0)
        await store.owners.claim(tx, "p1", "file", ["file-b"], b, 1.0)
    customer = (await service.get_customer(store, a)).as_dict()
    chunks = [c async for c in export_stream(store, customer, "jsonl")]
    lines = [orjson.loads(line) for chunk in chunks for line in chunk.splitlines()]
    exported = {r["object_id"] for r in lines if r["record_type"] == "object_owners"}
    assert exported == {"file-a", "batch-a"}
    result = await erase_customer(store, a, actor="test")
    assert result.rows_deleted["object_owners"] == 2
    assert await store.owners.owned(store, "p1", "file", a, ["file-a"]) == set()
    assert await store.owners.owner(store, "p1", "batch", "batch-a") is None
    assert await store.owners.owner(store, "p1", "file", "file-b") == b



async def test_a_claim_ending_after_the_erasure_brings_the_id_back_nowhere(backend, store):
    """An upload (or a batch retrieve) of the customer still in flight when it is erased claims
    its object afterwards: the erasure stays final, as for request records. On PostgreSQL a
    claim whose transaction is still open when the erasure starts is waited for, then deleted
    with the rest (SQLite's single writer never lets the two overlap)."""
    a = (await service.create_customer(store, "late-a@example.com", "A")).id
    b = (await service.create_customer(store, "late-b@example.com", "B")).id
    await erase_customer(store, a, actor="test")
    async with store.transaction() as tx:
        await store.owners.claim(tx, "p1", "file", ["file-late"], a, 2.0)
        await store.owners.claim(tx, "p1", "file", ["file-b"], b, 2.0)
    assert await store.owners.owner(store, "p1", "file", "file-late") is None
    assert await store.owners.owner(store, "p1", "file", "file-b") == b
    if backend.name != "postgres":
        return
    c = (await service.create_customer(store, "late-c@example.com", "C")).id
    host_b = await backend.open()
    claimed, release, erased = anyio.Event(), anyio.Event(), anyio.Event()

    async def claim_held_open() -> None:
        async with host_b.transaction() as tx:
            await host_b.owners.claim(tx, "p1", "batch", ["batch-c"], c, 3.0)
            claimed.set()
            await release.wait()

    async def erase() -> None:
        await erase_customer(store, c, actor="test")
        erased.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(claim_held_open)
            await claimed.wait()
            tg.start_soon(erase)
            with anyio.fail_after(10):  # the erasure waits for the claim, or (unguarded) ends
                while not erased.is_set() and not await store.fetch_all(
                        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
                    await anyio.sleep(0.01)
            release.set()
    finally:
        await host_b.close()
    assert await store.owners.owner(store, "p1", "batch", "batch-c") is None
    assert await store.fetch_all("SELECT count(*) FROM object_owners WHERE customer_id = $1",
                                 (c,)) == [(0,)]
