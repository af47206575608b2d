"""Files and batches are private to the customer that created them: two customers, A and B,
each with its own key, through a real Kraken (real sockets, real SQLite) in front of the mock
provider holding every file and batch in one account. B gets 404 for A's objects and never
sees them in lists; A gets its own, and its batch's results once it retrieved the batch; A's
erasure deletes its ownership rows."""
from __future__ import annotations

import json
import sqlite3
import tracemalloc

import pytest
from adminkit import Admin, admin_doc
from harness import free_port, http, running_kraken, running_mock
from tenantkit import BATCH, JSONL, kraken_with, new_customer, sdk_client

from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def _owner_rows(db_path, customer_id: str) -> list[tuple]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT kind, object_id FROM object_owners WHERE customer_id = ?",
                            (customer_id,)).fetchall()


async def _status(port: int, key: str, method: str, path: str, body: dict | None = None):
    raw = b"" if body is None else json.dumps(body).encode()
    reply = await http(port, method, path, raw, {"authorization": f"Bearer {key}",
                                                 "content-type": "application/json"})
    return reply.status, reply.json()


async def test_tenants_see_only_their_own_files_and_batches(tmp_path):
    admin_port = free_port()
    async with kraken_with(tmp_path, "tenant-a", "tenant-b", admin_port=admin_port) as (
            mock, k, ((a_id, a_key), (b_id, b_key))):
        a, b = sdk_client(k.port, a_key), sdk_client(k.port, b_key)
        raw = await a.files.with_raw_response.create(file=("in.jsonl", JSONL), purpose="batch")
        f = raw.parse()
        assert raw.content == mock.responses[-1].body, "relayed byte for byte"
        batch = await a.batches.create(input_file_id=f.id, **BATCH)
        b_file = await b.files.create(file=("b.jsonl", JSONL), purpose="batch")
        sent = len(mock.requests)

        for method, path in (("GET", f"/v1/files/{f.id}"),
                             ("GET", f"/v1/files/{f.id}/content"),
                             ("DELETE", f"/v1/files/{f.id}"),
                             ("GET", f"/v1/batches/{batch.id}"),
                             ("POST", f"/v1/batches/{batch.id}/cancel")):
            status, body = await _status(k.port, b_key, method, path)
            assert status == 404, (method, path, status)
            assert body["error"]["code"] == "not_found" and f.id != b_file.id
        status, body = await _status(k.port, b_key, "POST", "/v1/batches",
                                     {"input_file_id": f.id, **BATCH})
        assert status == 404 and body["error"]["param"] == "input_file_id"
        assert len(mock.requests) == sent, "nothing of B's reached the provider"

        assert [x.id for x in (await b.files.list()).data] == [b_file.id]
        assert (await b.batches.list()).data == []
        assert [x.id for x in (await a.files.list()).data] == [f.id]
        assert [x.id for x in (await a.batches.list()).data] == [batch.id]
        assert len(mock.files_api.files) == 2 and mock.files_api.batches

        assert (await a.files.retrieve(f.id)).id == f.id
        assert (await a.files.content(f.id)).content == JSONL
        await a.batches.retrieve(batch.id)
        done = await a.batches.retrieve(batch.id)
        assert done.status == "completed" and done.output_file_id
        out = await a.files.content(done.output_file_id)
        assert out.content == mock.files_api.files[done.output_file_id][1]
        status, _ = await _status(k.port, b_key, "GET",
                                  f"/v1/files/{done.output_file_id}/content")
        assert status == 404
        assert done.output_file_id not in [x.id for x in (await b.files.list()).data]
        assert (await a.files.delete(f.id)).deleted is True

        assert len(_owner_rows(k.db_path, a_id)) == 3 and _owner_rows(k.db_path, b_id)
        await Admin(admin_port, k.db_path).ok("DELETE", f"/admin/customers/{a_id}")
        assert _owner_rows(k.db_path, a_id) == []
        assert _owner_rows(k.db_path, b_id) == [("file", b_file.id)]


async def test_a_list_keeps_first_and_last_id_to_what_is_kept(tmp_path):
    async with kraken_with(tmp_path, "list-a", "list-b") as (_, k, ((_, a_key), (_, b_key))):
        a, b = sdk_client(k.port, a_key), sdk_client(k.port, b_key)
        mine = [(await a.files.create(file=("a.jsonl", JSONL), purpose="batch")).id
                for _ in range(2)][::-1]  # listed newest first
        await b.files.create(file=("b.jsonl", JSONL), purpose="batch")
        status, body = await _status(k.port, a_key, "GET", "/v1/files")
        assert status == 200 and [o["id"] for o in body["data"]] == mine
        assert (body["first_id"], body["last_id"]) == (mine[0], mine[-1])
        assert body["object"] == "list" and body["has_more"] is False


async def test_with_the_customers_own_key_its_own_account_is_not_checked(tmp_path):
    from kraken.accounts import byok, masterkey

    own = "sk-customer-own-files-3c1d9e0a77b2"
    key_file = tmp_path / "master.keys"
    key_file.write_text(masterkey.new_entry(1) + "\n")
    key_file.chmod(0o600)
    async with running_mock() as mock:
        mock.accept_key(own)
        doc = admin_doc(tmp_path, mock.port, free_port(),
                        byok={"master_key_file": str(key_file)})
        doc["providers"]["mockai"].update({"kind": "openai", "models": ["gpt-4o-mini"]})
        store = await SqliteStore.open(doc["store"]["path"])
        try:
            a_id, a_key = await new_customer(store, "byok-a")
            await byok.set_key(store, masterkey.load(str(key_file), ""), a_id, "openai", own)
        finally:
            await store.close()
        async with running_kraken(doc) as k:
            a = sdk_client(k.port, a_key)
            f = await a.files.create(file=("in.jsonl", JSONL), purpose="batch")
            assert mock.requests[-1].header(b"authorization") == f"Bearer {own}".encode()
            assert _owner_rows(k.db_path, a_id) == [], "its own account: nothing to record"
            assert (await a.files.retrieve(f.id)).id == f.id
            assert [x.id for x in (await a.files.list()).data] == [f.id]
            newer = mock.files_api.add(b"{}\n", "batch", "made-elsewhere.jsonl")["id"]
            asked = len(mock.files_api.lists)
            assert [x.id async for x in a.files.list(limit=1)] == [newer, f.id]
            assert mock.files_api.lists[asked:] == [  # its own pages, as the SDK asked for them
                {"limit": "1"}, {"limit": "1", "after": newer}]


OWNED_BEFORE = 200_000
"""Ids a long-standing customer owns (one ``POST /v1/files`` each, over time)."""


async def test_a_list_reads_the_ownership_of_its_page_only(tmp_path):
    """A list checked the page against every id the customer ever created, all loaded: a
    customer's own uploads grew every list call's memory without bound (about 40 MB here)."""
    async with kraken_with(tmp_path, "many-a") as (_, k, ((a_id, a_key),)):
        a = sdk_client(k.port, a_key)
        f = await a.files.create(file=("a.jsonl", JSONL), purpose="batch")
        with sqlite3.connect(k.db_path) as conn:  # files the provider no longer lists
            conn.executemany("INSERT INTO object_owners VALUES ('mockai', 'file', ?, ?, 1)",
                             ((f"file-gone-{i}", a_id) for i in range(OWNED_BEFORE)))
        await a.files.list()
        tracemalloc.start()
        try:
            listed = await a.files.list()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert [x.id for x in listed.data] == [f.id]
    assert peak < 4 * 1024 * 1024, f"a one-file list peaked at {peak} bytes"
