"""The admin HTTP API on its own listener, through real sockets."""
from __future__ import annotations

import json
import socket
import sqlite3

import pytest
from adminkit import ADMIN_TOKEN, BEARER, admin_kraken, insert_requests
from harness import auth_headers, free_port, http, kraken_mapping, running_kraken, running_mock

pytestmark = pytest.mark.anyio


async def test_every_kind_of_bad_token_gets_the_same_401(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        replies = []
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {ADMIN_TOKEN}"},
                        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
                        {"Authorization": "Bearer"},
                        {"Authorization": f"bearer {ADMIN_TOKEN[:-1]}"}):
            replies.append(await http(admin.port, "GET", "/admin/customers", b"", headers))
        replies.append(await http(admin.port, "GET", "/admin/no-such-path", b"",
                                  {"Authorization": "Bearer nope"}))
        assert {r.status for r in replies} == {401}
        assert len({r.body for r in replies}) == 1
        assert ADMIN_TOKEN.encode() not in b"".join(r.body for r in replies)
        ok = await http(admin.port, "GET", "/admin/customers", b"", BEARER)
        assert ok.status == 200


async def test_admin_listener_is_off_without_a_token_hash_and_absent_from_the_client_port(tmp_path):
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, admin={"port": port})
        async with running_kraken(doc) as k:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            reply = await http(k.port, "GET", "/admin/customers", b"", BEARER)
            assert reply.status == 404


async def test_customers_create_read_rectify_and_conflicts(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer("Ada@Example.COM", "Ada")
        assert cus["email"] == "Ada@example.com" and cus["id"].startswith("cus_")
        dup = await admin.call("POST", "/admin/customers", {"email": "ada@example.com"})
        assert dup.status == 409 and dup.json()["error"]["param"] == "email"
        bad = await admin.call("POST", "/admin/customers", {"email": "not-an-email"})
        assert bad.status == 400 and bad.json()["error"]["param"] == "email"
        missing = await admin.call("POST", "/admin/customers", {"name": "x"})
        assert missing.status == 400 and missing.json()["error"]["param"] == "email"
        extra = await admin.call("POST", "/admin/customers", {"email": "b@example.com", "admin": True})
        assert extra.status == 400 and extra.json()["error"]["param"] == "admin"
        # Rectification.
        fixed = await admin.ok("PATCH", f"/admin/customers/{cus['id']}",
                               {"email": "ada.l@example.org", "name": "Ada L."})
        assert (fixed["email"], fixed["name"]) == ("ada.l@example.org", "Ada L.")
        assert (await admin.ok("GET", f"/admin/customers/{cus['id']}"))["email"] == "ada.l@example.org"
        empty = await admin.call("PATCH", f"/admin/customers/{cus['id']}", {})
        assert empty.status == 400 and empty.json()["error"]["param"] == "body"
        gone = await admin.call("GET", "/admin/customers/cus_doesnotexist")
        assert gone.status == 404
        listing = await admin.ok("GET", "/admin/customers?limit=10")
        assert [c["id"] for c in listing["data"]] == [cus["id"]]


async def test_right_to_object_sets_the_opt_out_flag(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        assert cus["opted_out"] is False
        out = await admin.ok("POST", f"/admin/customers/{cus['id']}/object")
        assert out["opted_out"] is True
        back = await admin.ok("POST", f"/admin/customers/{cus['id']}/object", {"opted_out": False})
        assert back["opted_out"] is False
        bad = await admin.call("POST", f"/admin/customers/{cus['id']}/object", {"opted_out": "yes"})
        assert bad.status == 400 and bad.json()["error"]["param"] == "opted_out"


async def test_organisations_and_members(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        owner, dev = await admin.customer(), await admin.customer()
        org = await admin.ok("POST", "/admin/organisations", {"name": "Acme", "owner_id": owner["id"]}, 201)
        m = await admin.ok("POST", f"/admin/organisations/{org['id']}/members",
                           {"customer_id": dev["id"], "role": "developer"}, 201)
        assert m["role"] == "developer"
        again = await admin.call("POST", f"/admin/organisations/{org['id']}/members",
                                 {"customer_id": dev["id"], "role": "developer"})
        assert again.status == 409
        bad_role = await admin.call("POST", f"/admin/organisations/{org['id']}/members",
                                    {"customer_id": owner["id"], "role": "god"})
        assert bad_role.status == 400 and bad_role.json()["error"]["param"] == "role"
        await admin.ok("PATCH", f"/admin/organisations/{org['id']}/members/{dev['id']}", {"role": "admin"})
        full = await admin.ok("GET", f"/admin/organisations/{org['id']}")
        assert {(x["customer_id"], x["role"]) for x in full["members"]} == {
            (owner["id"], "owner"), (dev["id"], "admin")}
        last_owner = await admin.call("DELETE", f"/admin/organisations/{org['id']}/members/{owner['id']}")
        assert last_owner.status == 400
        await admin.ok("DELETE", f"/admin/organisations/{org['id']}/members/{dev['id']}")
        renamed = await admin.ok("PATCH", f"/admin/organisations/{org['id']}", {"name": "Acme Ltd"})
        assert renamed["name"] == "Acme Ltd"
        mine = await admin.ok("GET", f"/admin/organisations?customer={owner['id']}")
        assert [o["id"] for o in mine["data"]] == [org["id"]]
        await admin.ok("DELETE", f"/admin/organisations/{org['id']}")
        assert (await admin.call("GET", f"/admin/organisations/{org['id']}")).status == 404


async def test_keys_secret_shown_once_limits_revoke_delete(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        created = await admin.ok("POST", "/admin/keys", {"customer_id": cus["id"], "name": "ci",
                                                         "rpm": 60}, 201)
        secret, key = created["secret"], created["key"]
        assert secret.startswith("kr_live_") and key["id"] in secret and key["rpm"] == 60
        shown = await admin.call("GET", f"/admin/keys/{key['id']}")
        listed = await admin.call("GET", f"/admin/keys?customer={cus['id']}")
        for reply in (shown, listed):
            assert reply.status == 200 and secret.encode() not in reply.body
            assert b"$2b$" not in reply.body and b"hash" not in reply.body
        limited = await admin.ok("PATCH", f"/admin/keys/{key['id']}",
                                 {"tpm": 1000, "max_concurrent": 2, "allowed_models": ["mock-gpt"]})
        assert (limited["tpm"], limited["max_concurrent"], limited["allowed_models"]) == (1000, 2, ["mock-gpt"])
        bad = await admin.call("PATCH", f"/admin/keys/{key['id']}", {"rpm": -1})
        assert bad.status == 400 and bad.json()["error"]["param"] == "rpm"
        revoked = await admin.ok("POST", f"/admin/keys/{key['id']}/revoke")
        assert revoked["status"] == "revoked"
        await admin.ok("DELETE", f"/admin/keys/{key['id']}")
        assert (await admin.call("GET", f"/admin/keys/{key['id']}")).status == 404
        no_cus = await admin.call("POST", "/admin/keys", {"customer_id": "cus_nobody"})
        assert no_cus.status == 404 and no_cus.json()["error"]["param"] == "customer_id"
        # The secret and key hashes never reach the audit log or any file but the key table.
        conn = sqlite3.connect(k.db_path)
        audit = repr(conn.execute("SELECT * FROM audit_log").fetchall())
        conn.close()
        assert secret not in audit and "$2b$" not in audit and "key.create" in audit


async def test_unknown_path_404_wrong_method_405_with_allow(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        assert (await admin.call("GET", "/admin/nothing")).status == 404
        wrong = await admin.call("PUT", "/admin/customers")
        assert wrong.status == 405 and set(wrong.headers["allow"].split(", ")) == {"GET", "POST"}
        assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_usage_by_model_and_day_with_percentiles_and_error_rate(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        a, b = await admin.customer(), await admin.customer()
        start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
        # latencies 1..100 ms: nearest-rank p50 = 50, p95 = 95; every 10th an error.
        await insert_requests(k.db_path, a["id"], 100, start_ts=start, latency=lambda i: float(i + 1),
                        error_every=10)
        await insert_requests(k.db_path, b["id"], 3, start_ts=start + 86_400, model="other")
        by_model = await admin.ok("GET", "/admin/usage?group_by=model")
        rows = {r["group"]: r for r in by_model["data"]}
        mg = rows["mock-gpt"]
        assert (mg["requests"], mg["p50_latency_ms"], mg["p95_latency_ms"]) == (100, 50.0, 95.0)
        assert (mg["errors"], mg["error_rate"]) == (10, 0.1)
        assert (mg["prompt_tokens"], mg["completion_tokens"], mg["total_tokens"]) == (1000, 500, 1500)
        assert mg["cost_usd"] == pytest.approx(0.1)
        assert rows["other"]["requests"] == 3
        one = await admin.ok("GET", f"/admin/usage?customer={b['id']}&group_by=day")
        assert [(r["group"], r["requests"]) for r in one["data"]] == [("2026-01-02", 3)]
        window = await admin.ok("GET", "/admin/usage?group_by=day&from=2026-01-01&to=2026-01-02")
        assert [(r["group"], r["requests"]) for r in window["data"]] == [("2026-01-01", 100)]
        for query, param in (("group_by=week", "group_by"), ("from=yesterday", "from"),
                             ("colour=red", "colour"), ("customer=a%20b", "customer"),
                             ("from=2026-02-01&to=2026-01-01", "to")):
            bad = await admin.call("GET", f"/admin/usage?{query}")
            assert bad.status == 400 and bad.json()["error"]["param"] == param, (query, bad.body)


async def test_audit_records_every_admin_action_and_verifies(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        await admin.ok("PATCH", f"/admin/customers/{cus['id']}", {"name": "New Name"})
        reply = await admin.call("POST", "/admin/keys", {"customer_id": cus["id"]},
                                 headers={"x-kraken-actor": "alice"})
        assert reply.status == 201
        entries = (await admin.ok("GET", "/admin/audit"))["data"]
        assert [(e["action"], e["actor"]) for e in entries] == [
            ("customer.create", "api"), ("customer.update", "api"), ("key.create", "api:alice")]
        assert entries[1]["detail"] == {"fields": ["name"]} and entries[1]["subject"] == cus["id"]
        assert all("New Name" not in str(e) and cus["email"] not in str(e) for e in entries)
        verdict = await admin.ok("GET", "/admin/audit/verify")
        assert verdict["ok"] is True and verdict["checked"] == 3


async def test_wallet_credit_is_idempotent_by_ref_and_validated(tmp_path):
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        path = f"/admin/customers/{cus['id']}/wallet"
        first = await admin.ok("POST", path, {"amount_usd": "10.50", "ref": "pay_1"}, 201)
        assert first["amount_micros"] == 10_500_000
        again = await admin.ok("POST", path, {"amount_usd": "10.50", "ref": "pay_1"}, 200)
        assert again["id"] == first["id"]
        clash = await admin.call("POST", path, {"amount_usd": "3", "ref": "pay_1"})
        assert clash.status == 409 and clash.json()["error"]["param"] == "ref"
        for body, param in (({"amount_usd": "1.0000001", "ref": "r2"}, "amount_usd"),
                            ({"amount_usd": "ten", "ref": "r3"}, "amount_usd"),
                            ({"amount_usd": [1], "ref": "r4"}, "amount_usd"),
                            ({"amount_usd": "1"}, "ref"),
                            ({"amount_usd": "1", "ref": "r5", "kind": "usage_debit"}, "kind"),
                            ({"amount_usd": "-5", "ref": "r6"}, "amount_usd"),
                            ({"amount_usd": "0", "ref": "r7", "kind": "refund"}, "amount_usd"),
                            ({"amount_usd": "2000000000", "ref": "r8"}, "amount_usd")):
            bad = await admin.call("POST", path, body)
            assert bad.status == 400 and bad.json()["error"]["param"] == param, (body, bad.body)
        shown = await admin.ok("GET", path)
        assert shown["balance_usd"] == "10.500000" and len(shown["transactions"]) == 1
        assert (await admin.call("GET", "/admin/customers/cus_nobody/wallet")).status == 404


async def test_admin_wallet_changes_reach_this_process_guard_at_once(tmp_path):
    """An admin credit must be seen by the next request, not after ``refresh_interval_s``:
    the customer who was just topped up would otherwise keep getting 402 (here for an hour)."""
    chat = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    async with admin_kraken(tmp_path, wallet={"refresh_interval_s": 3600},
                            plans={"default": "pre", "pre": {"prepaid": True}}) as (admin, k):
        cus = await admin.customer()
        key = await admin.ok("POST", "/admin/keys", {"customer_id": cus["id"]}, 201)
        path = f"/admin/customers/{cus['id']}/wallet"

        async def ask() -> int:
            r = await http(k.port, "POST", "/v1/chat/completions", chat.encode(),
                           {**auth_headers(key["secret"]), "content-type": "application/json"})
            return r.status

        assert await ask() == 402
        await admin.ok("POST", path, {"amount_usd": "5", "ref": "pay_1"}, 201)
        assert await ask() == 200
        await admin.ok("POST", path, {"amount_usd": "-5", "ref": "fix_1", "kind": "adjustment"},
                       201)
        assert await ask() == 402
        await admin.ok("POST", path, {"amount_usd": "1", "ref": "ref_1", "kind": "refund"}, 201)
        assert await ask() == 200
