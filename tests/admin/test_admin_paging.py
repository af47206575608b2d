"""Every admin list answers one bounded page (``?limit=&after=``; ``data``, ``has_more``,
``next_after``), never the whole table: a big deployment would otherwise get a multi-megabyte
answer. Walking the pages gives every row once, in the list's order."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from adminkit import admin_kraken, insert_requests

pytestmark = pytest.mark.anyio


async def walk(admin, path: str, limit: int, cursor: str = "after") -> list[dict]:
    """Every page of ``path`` at ``limit`` rows, checking each page's promises."""
    rows: list[dict] = []
    after = None
    sep = "&" if "?" in path else "?"
    for _ in range(100):
        query = f"{path}{sep}limit={limit}" + (
            f"&{cursor}={quote(str(after), safe='')}" if after is not None else "")
        page = await admin.ok("GET", query)
        assert len(page["data"]) <= limit
        rows += page["data"]
        if not page["has_more"]:
            assert page["next_after"] is None
            return rows
        assert len(page["data"]) == limit
        after = page["next_after"]
    raise AssertionError("paging never ended")


async def test_customers_organisations_and_members_come_in_pages(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        owner = await admin.customer()
        customers = [owner] + [await admin.customer() for _ in range(101)]
        default = await admin.ok("GET", "/admin/customers")
        assert len(default["data"]) == 100 and default["has_more"] is True
        listed = await walk(admin, "/admin/customers", 7)
        assert [c["id"] for c in listed] == sorted(c["id"] for c in customers)
        # A page that ends exactly at the last row says there is no more.
        exact = await admin.ok("GET", f"/admin/customers?limit={len(customers)}")
        assert exact["has_more"] is False and exact["next_after"] is None

        orgs = [await admin.ok("POST", "/admin/organisations",
                               {"name": f"org {i}", "owner_id": owner["id"]}, 201)
                for i in range(5)]
        assert [o["id"] for o in await walk(admin, "/admin/organisations", 2)] == sorted(
            o["id"] for o in orgs)
        mine = await walk(admin, f"/admin/organisations?customer={owner['id']}", 3)
        assert len(mine) == 5

        org = orgs[0]["id"]
        for c in customers[1:8]:
            await admin.ok("POST", f"/admin/organisations/{org}/members",
                           {"customer_id": c["id"], "role": "developer"}, 201)
        members = await walk(admin, f"/admin/organisations/{org}/members", 3)
        assert [m["customer_id"] for m in members] == [c["id"] for c in customers[:8]]
        gone = customers[3]["id"]
        await admin.ok("DELETE", f"/admin/organisations/{org}/members/{gone}")
        stale = await admin.call("GET", f"/admin/organisations/{org}/members?after={gone}")
        assert stale.status == 400 and stale.json()["error"]["param"] == "after"
        for bad in ("limit=0", "limit=1001", "limit=x", "after=a%20b"):
            r = await admin.call("GET", f"/admin/organisations?{bad}")
            assert r.status == 400 and r.json()["error"]["param"] == bad.split("=")[0], bad


async def test_keys_come_in_pages_newest_first(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        made = [(await admin.ok("POST", "/admin/keys", {"customer_id": cus["id"]}, 201))["key"]
                for _ in range(5)]
        listed = await walk(admin, f"/admin/keys?customer={cus['id']}", 2)
        newest_first = sorted(made, key=lambda k: (-k["created_at"], k["id"]))
        assert [k["id"] for k in listed] == [k["id"] for k in newest_first]
        assert len(await walk(admin, "/admin/keys", 4)) == 5


async def test_usage_groups_and_audit_entries_come_in_pages(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        for i in range(5):
            await insert_requests(k.db_path, cus["id"], 2, model=f"model-{i}")
        groups = await walk(admin, "/admin/usage?group_by=model", 2)
        assert [(g["group"], g["requests"]) for g in groups] == [
            (f"model-{i}", 2) for i in range(5)]
        whole = await admin.ok("GET", "/admin/usage?group_by=model")
        assert whole["group_by"] == "model" and whole["has_more"] is False
        assert len(whole["data"]) == 5
        for _ in range(4):
            await admin.ok("PATCH", f"/admin/customers/{cus['id']}", {"name": "x"})
        entries = await walk(admin, "/admin/audit", 2)
        assert [e["seq"] for e in entries] == list(range(1, 6))


async def test_usage_pages_past_a_model_name_of_the_longest_kind(tmp_path):
    """A model name may be 256 characters (kraken/policy/router.py): one ending a page is the
    next page's ``after``, and a ``model`` filter, so both take that long a value."""
    long_name = "m/a+b" + "x" * 251
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        for model in ("a-model", long_name, "z-model"):
            await insert_requests(k.db_path, cus["id"], 1, model=model)
        groups = await walk(admin, "/admin/usage?group_by=model", 1)
        assert [g["group"] for g in groups] == ["a-model", long_name, "z-model"]
        one = await admin.ok("GET", f"/admin/usage?group_by=model&model={quote(long_name)}")
        assert [g["group"] for g in one["data"]] == [long_name]


async def test_usage_pages_past_the_empty_group(tmp_path):
    """Requests without a customer (refused before a key was known) make the group "", the
    first in order: a page ending there must lead on to the next group, not back to itself."""
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        await insert_requests(k.db_path, None, 2)
        await insert_requests(k.db_path, cus["id"], 1)
        groups = await walk(admin, "/admin/usage?group_by=customer", 1)
        assert [(g["group"], g["requests"]) for g in groups] == [("", 2), (cus["id"], 1)]
