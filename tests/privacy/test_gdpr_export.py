"""Right of access and portability: a complete export, streamed, in JSON Lines and CSV."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from adminkit import admin_kraken, insert_requests
from harness import write_toml

pytestmark = pytest.mark.anyio
PAGE = 7


async def _customer_with_data(admin, k, n_requests: int) -> tuple[dict, list[str], str]:
    cus = await admin.customer(name="Zoë O'Brien")
    org = await admin.ok("POST", "/admin/organisations", {"name": "Zoë's org", "owner_id": cus["id"]}, 201)
    created = await admin.ok("POST", "/admin/keys", {"customer_id": cus["id"], "name": "laptop"}, 201)
    other = await admin.customer()
    # Same second for several rows: keyset paging must not skip or repeat ties.
    ids = await insert_requests(k.db_path, cus["id"], n_requests, latency=lambda i: 5.0)
    await insert_requests(k.db_path, cus["id"], 4, start_ts=1_000.0)
    await insert_requests(k.db_path, other["id"], 5)
    return cus, ids, created["secret"], org["id"]


async def test_jsonl_export_is_complete_across_many_pages(tmp_path):
    async with admin_kraken(tmp_path, admin={"export_page_rows": PAGE}) as (admin, k):
        cus, ids, secret, org_id = await _customer_with_data(admin, k, 5 * PAGE + 3)
        reply = await admin.call("GET", f"/admin/customers/{cus['id']}/export?format=jsonl")
        assert reply.status == 200 and reply.headers["transfer-encoding"] == "chunked"
        assert reply.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in reply.body.splitlines()]
    kinds = [line["record_type"] for line in lines]
    assert kinds[0] == "export" and kinds[-1] == "export_end"
    requests = [line for line in lines if line["record_type"] == "request"]
    assert len(requests) == len(ids) + 4 == lines[-1]["requests"]
    assert set(ids) <= {r["request_id"] for r in requests}
    assert len({r["request_id"] for r in requests}) == len(requests)  # no repeats
    assert all(r["customer_id"] == cus["id"] for r in requests)
    assert [r["ts"] for r in requests] == sorted(r["ts"] for r in requests)
    customer = next(line for line in lines if line["record_type"] == "customer")
    assert (customer["email"], customer["name"]) == (cus["email"], "Zoë O'Brien")
    assert any(line["record_type"] == "organisation" and line["id"] == org_id for line in lines)
    assert any(line["record_type"] == "api_keys" and line["name"] == "laptop" for line in lines)
    assert any(line["record_type"] == "members" for line in lines)
    assert secret.encode() not in reply.body and b"$2b$" not in reply.body
    assert b'"hash"' not in reply.body


async def test_csv_export_is_one_table_with_every_row(tmp_path):
    async with admin_kraken(tmp_path, admin={"export_page_rows": PAGE}) as (admin, k):
        cus, ids, _, _ = await _customer_with_data(admin, k, 3 * PAGE)
        reply = await admin.call("GET", f"/admin/customers/{cus['id']}/export?format=csv")
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    requests = [r for r in rows if r["record_type"] == "request"]
    assert len(requests) == len(ids) + 4
    assert {r["customer_id"] for r in requests} == {cus["id"]}
    assert set(ids) <= {r["request_id"] for r in requests}
    customer = json.loads(next(r for r in rows if r["record_type"] == "customer")["data"])
    assert customer["email"] == cus["email"]
    assert json.loads(rows[-1]["data"])["requests"] == len(requests)


async def test_export_errors_name_the_field(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        bad = await admin.call("GET", f"/admin/customers/{cus['id']}/export?format=xml")
        assert bad.status == 400 and bad.json()["error"]["param"] == "format"
        gone = await admin.call("GET", "/admin/customers/cus_nobody/export")
        assert gone.status == 404


async def test_cli_export_matches_the_api(tmp_path):
    async with admin_kraken(tmp_path, admin={"export_page_rows": PAGE}) as (admin, k):
        cus, _, _, _ = await _customer_with_data(admin, k, 2 * PAGE + 1)
        api = await admin.call("GET", f"/admin/customers/{cus['id']}/export")
        cfg = tmp_path / "cli.toml"
        write_toml(cfg, {"store": {"path": str(k.db_path)}, "admin": {"export_page_rows": 3}})
        out = tmp_path / "export.jsonl"
        done = subprocess.run([sys.executable, "-m", "kraken", "export", cus["id"], "--config",
                               str(cfg), "-o", str(out)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        bad = subprocess.run([sys.executable, "-m", "kraken", "export", cus["id"], "--config",
                              str(cfg), "--format", "pdf"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "--format" in bad.stderr

    def strip(body: bytes) -> list[dict]:
        lines = [json.loads(x) for x in body.splitlines()]
        return [x for x in lines if x["record_type"] != "export"]

    assert strip(out.read_bytes()) == strip(api.body)
