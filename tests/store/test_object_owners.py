"""Who created each file and batch (``store.owners``), once per backend: a fresh SQLite file,
or a fresh database on this module's real PostgreSQL; erasure deletes a customer's rows and
export lists its ids."""
from __future__ import annotations

import orjson
import pytest

from postgres_server import StoreBackend, pg_server  # noqa: F401  (module-scoped fixture)
from kraken.accounts import service
from kraken.privacy.erase import erase_customer
from kraken.privacy.export import export_stream

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        backend = StoreBackend("sqlite", str(tmp_path / "owners.db"))
    else:
        backend = StoreBackend("postgres", request.getfixturevalue("pg_server").create_database())
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
