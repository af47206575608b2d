"""An organisation holds at most ``service.MAX_MEMBERS`` members: one more is a 409
``too_many_members``, from the admin API, and from the account API on inviting and on
accepting an invitation, so the member list (embedded in ``GET /admin/organisations/{id}``,
shown by the portal) stays one bounded answer."""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import anyio.to_thread
import pytest
from adminkit import admin_kraken
from harness import http

from kraken.accounts import service

pytestmark = pytest.mark.anyio


def fill(db_path: Path, org_id: str, n: int) -> list[str]:
    """``n`` new customers made members of ``org_id`` in one transaction (as the service
    would write them; a thousand service calls would make the test slow, not truer)."""
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    ids = [f"cus_fill{uuid.uuid4().hex}" for _ in range(n)]
    try:
        conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        conn.executemany("INSERT INTO customers (id, email, name, plan, opted_out, created_at) "
                         "VALUES (?, ?, NULL, 'default', 0, ?)",
                         [(c, f"{c}@example.com", now) for c in ids])
        conn.executemany("INSERT INTO members (org_id, customer_id, role, created_at) "
                         "VALUES (?, ?, 'developer', ?)", [(org_id, c, now) for c in ids])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return ids


async def test_a_full_organisation_refuses_one_more_member_with_409(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        owner, extra = await admin.customer(), await admin.customer()
        org = (await admin.ok("POST", "/admin/organisations",
                              {"name": "Big", "owner_id": owner["id"]}, 201))["id"]
        owner_key = (await admin.ok("POST", "/admin/keys",
                                    {"customer_id": owner["id"], "org_id": org}, 201))["secret"]
        extra_key = (await admin.ok("POST", "/admin/keys", {"customer_id": extra["id"]},
                                    201))["secret"]

        async def account(secret: str, method: str, path: str, body=None):
            raw = b"" if body is None else json.dumps(body).encode()
            return await http(k.port, method, f"/v1/account{path}", raw,
                              {"authorization": f"Bearer {secret}",
                               "content-type": "application/json"})

        filled = await anyio.to_thread.run_sync(
            fill, k.db_path, org, service.MAX_MEMBERS - 1)  # the owner is the first
        body = {"customer_id": extra["id"], "role": "developer"}
        refused = await admin.call("POST", f"/admin/organisations/{org}/members", body)
        assert refused.status == 409, refused.body
        error = refused.json()["error"]
        assert (error["code"], error["param"]) == ("too_many_members", "customer_id")
        assert str(service.MAX_MEMBERS) in error["message"]
        invite = await account(owner_key, "POST", f"/organisations/{org}/members", body)
        assert invite.status == 409 and invite.json()["error"]["code"] == "too_many_members"
        whole = await admin.ok("GET", f"/admin/organisations/{org}")
        assert len(whole["members"]) == service.MAX_MEMBERS

        # Invited while there was room, accepting once the organisation is full again is
        # refused too, and the invitation stays pending until there is room.
        await admin.ok("DELETE", f"/admin/organisations/{org}/members/{filled[0]}")
        invite = await account(owner_key, "POST", f"/organisations/{org}/members", body)
        assert invite.status == 201, invite.body
        await anyio.to_thread.run_sync(fill, k.db_path, org, 1)
        accept = f"/invitations/{invite.json()['id']}/accept"
        full = await account(extra_key, "POST", accept)
        assert full.status == 409 and full.json()["error"]["code"] == "too_many_members"
        await admin.ok("DELETE", f"/admin/organisations/{org}/members/{filled[1]}")
        joined = await account(extra_key, "POST", accept)
        assert joined.status == 200, joined.body
        members = (await admin.ok("GET", f"/admin/organisations/{org}"))["members"]
        assert len(members) == service.MAX_MEMBERS
        assert extra["id"] in {m["customer_id"] for m in members}
