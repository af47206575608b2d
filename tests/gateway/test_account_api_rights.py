"""The account API's usage, export, objection, erasure and top-up routes against a real Kraken
on loopback sockets (and a local stand-in for Stripe's Checkout Sessions endpoint).

Usage is the caller's own, or its organisation's for roles with ``read_usage``, and matches
the request records; export is complete and only the caller's; objection flips opted_out and
is audited; erasure removes the customer from the database files' bytes and its key stops
working (an owner with other members gets 409); a top-up creates a Checkout Session with the
customer in its metadata, and the signed webhook for it credits that customer's wallet."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest

from adminkit import admin_doc
from harness import auth_headers, db_rows, free_port, http, running_kraken, running_mock, wait_for
from kraken import audit, config
from kraken.accounts import service
from kraken.billing import wallet
from kraken.billing.stripe_webhook import sign
from kraken.store.sqlite import SqliteStore
from test_account_api import Member, World, assert_error, audited, new_customer, new_key, populate

pytestmark = pytest.mark.anyio

STRIPE_KEY = "sk_test_" + "k" * 24
WHSEC = "whsec_" + "w" * 24


@pytest.fixture(scope="module")
def anyio_backend():
    return ("asyncio", {"use_uvloop": True})


class MockStripe:
    """``POST /v1/checkout/sessions`` as Stripe documents it: form-encoded, Bearer secret key;
    answers a session object with ``id`` and ``url``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.port = 0
        self.refuse_next = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        form = (await reader.readexactly(int(headers["content-length"]))).decode()
        self.calls.append((lines[0], headers.get("authorization", ""), dict(parse_qsl(form))))
        n = len(self.calls)
        ok = lines[0] == "POST /v1/checkout/sessions HTTP/1.1" \
            and headers.get("authorization") == f"Bearer {STRIPE_KEY}" \
            and headers.get("content-type") == "application/x-www-form-urlencoded" \
            and not self.refuse_next
        self.refuse_next = False
        body = orjson.dumps({"id": f"cs_test_{n}", "object": "checkout.session",
                             "url": f"https://checkout.stripe.com/c/pay/cs_test_{n}"} if ok else
                            {"error": {"type": "invalid_request_error"}})
        writer.write(f"HTTP/1.1 {200 if ok else 401} OK\r\ncontent-type: application/json\r\n"
                     f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()


@pytest.fixture(scope="module")
async def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("account-rights")
    stripe = MockStripe()
    server = await asyncio.start_server(stripe.handle, "127.0.0.1", 0)
    stripe.port = server.sockets[0].getsockname()[1]
    doc = admin_doc(tmp, 0, free_port(), stripe={
        "api_key": STRIPE_KEY, "api_base": f"http://127.0.0.1:{stripe.port}",
        "webhook_secret": WHSEC})
    try:
        async with running_mock() as mock:
            doc = admin_doc(tmp, mock.port, free_port(), stripe=doc["stripe"])
            async with running_kraken(doc) as k:
                store = await SqliteStore.open(str(k.db_path))
                try:
                    yield await populate(k.port, store), stripe, tmp, k.db_path
                finally:
                    await store.close()
    finally:
        server.close()


async def insert(*args: Any, **kw: Any) -> None:
    """Rows written from outside Kraken, in a thread (Kraken runs in this event loop)."""
    import anyio.to_thread

    await anyio.to_thread.run_sync(lambda: _insert(*args, **kw))


def _insert(db: Path, customer: str, key_id: str, n: int, *, cost: float | None = 0.001) -> None:
    with sqlite3.connect(db, timeout=30) as conn:
        for i in range(n):
            conn.execute(
                "INSERT INTO requests (ts, request_id, customer_id, key_id, model_requested, "
                "model_dispatched, provider, prompt_tokens, completion_tokens, latency_ms, "
                "cost_usd, kraken_fee_usd, fallback_used, status) "
                "VALUES (?, ?, ?, ?, 'mock-gpt', 'mock-gpt', 'mockai', 10, 5, ?, ?, 0, 0, 200)",
                (time.time() - 60, f"r_{uuid.uuid4().hex}", customer, key_id, 10.0 + i, cost))


# ---- usage -----------------------------------------------------------------------------------

async def test_usage_is_own_for_developers_and_the_organisations_for_admins_and_owners(env):
    w, _, _, db = env
    dev, adm = w.members["developer"], w.members["admin"]
    await insert(db, dev.customer_id, dev.key_id, 3)
    await insert(db, adm.customer_id, adm.key_id, 2)
    await insert(db, w.foreign.customer_id, w.foreign.key_id, 4)

    mine = (await w.call(dev, "GET", "/v1/account/usage")).json()
    assert mine["scope"] == "customer"
    assert mine["total"]["requests"] == 3 and mine["total"]["total_tokens"] == 45
    assert mine["total"]["cost_usd"] == pytest.approx(0.003)
    assert [k["group"] for k in mine["by_key"]] == [dev.key_id]

    for role in ("owner", "admin"):
        org = (await w.call(w.members[role], "GET", "/v1/account/usage")).json()
        assert org["scope"] == "organisation" and org["total"]["requests"] == 5
        assert sorted(k["group"] for k in org["by_key"]) == sorted([dev.key_id, adm.key_id])
    foreign = (await w.call(w.foreign, "GET", "/v1/account/usage")).json()
    assert foreign["total"]["requests"] == 4

    await insert(db, adm.customer_id, adm.key_id, 1, cost=None)  # usage without a price
    org = (await w.call(w.members["owner"], "GET", "/v1/account/usage")).json()
    assert org["total"]["unpriced"] == 1 and org["total"]["cost_usd"] is None
    assert (await w.call(dev, "GET", "/v1/account/usage")).json()["total"]["cost_usd"] \
        == pytest.approx(0.003)
    assert_error(await w.call(w.members["restricted"], "GET", "/v1/account/usage"), 403,
                 "forbidden", param="role")


# ---- export ----------------------------------------------------------------------------------

async def test_export_is_complete_and_only_the_callers_own(env):
    w, _, _, db = env
    dev = w.members["developer"]
    await insert(db, dev.customer_id, dev.key_id, 2)
    expected = [r["request_id"] for r in db_rows(db) if r["customer_id"] == dev.customer_id]
    reply = await w.call(dev, "GET", "/v1/account/export")
    assert reply.status == 200 and reply.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in reply.body.splitlines()]
    assert lines[0]["record_type"] == "export" and lines[0]["customer_id"] == dev.customer_id
    assert {"record_type": "customer",
            **(await service.get_customer(w.store, dev.customer_id)).as_dict()} in lines
    assert lines[-1]["record_type"] == "export_end"
    requests = [r for r in lines if r["record_type"] == "request"]
    assert sorted(r["request_id"] for r in requests) == sorted(expected) and expected
    for other in (w.members["admin"], w.foreign, w.personal):
        assert other.customer_id.encode() not in reply.body
    assert b"key_hash" not in reply.body and dev.secret.encode() not in reply.body
    assert await audited(w, dev, "customer.export") == 1

    csv = await w.call(w.members["restricted"], "GET", "/v1/account/export?format=csv")
    assert csv.status == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.body.startswith(b"record_type,")
    assert w.members["restricted"].customer_id.encode() in csv.body
    assert dev.customer_id.encode() not in csv.body
    assert_error(await w.call(dev, "GET", "/v1/account/export?customer=" + w.foreign.customer_id),
                 400, "invalid_value")


# ---- objection -------------------------------------------------------------------------------

async def test_objection_flips_opted_out_and_is_audited(env):
    w, *_ = env
    who = w.members["restricted"]
    assert not (await service.get_customer(w.store, who.customer_id)).opted_out
    reply = await w.call(who, "POST", "/v1/account/object")
    assert reply.status == 200 and reply.json()["opted_out"] is True
    assert (await service.get_customer(w.store, who.customer_id)).opted_out
    assert not (await service.get_customer(w.store, w.members["admin"].customer_id)).opted_out
    assert await audited(w, who, "customer.object") == 1
    back = await w.call(who, "POST", "/v1/account/object", {"opted_out": False})
    assert back.json()["opted_out"] is False
    assert not (await service.get_customer(w.store, who.customer_id)).opted_out
    assert await audited(w, who, "customer.object") == 2


# ---- top-up ----------------------------------------------------------------------------------

def ledger_micros(db: Path, customer: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT COALESCE(SUM(t.amount_micros), 0) FROM wallet_transactions t "
                           "JOIN wallets w ON w.id = t.wallet_id WHERE w.customer_id = ?",
                           (customer,)).fetchone()
    return row[0]


async def test_checkout_creates_a_session_and_the_signed_webhook_credits_the_wallet(env):
    w, stripe, _, db = env
    owner = w.members["owner"]
    before = await wallet.balance(w.store, owner.customer_id)
    reply = await w.call(owner, "POST", "/v1/account/wallet/checkout", {"amount_usd": 25})
    assert reply.status == 200, reply.body
    session = reply.json()
    assert session["url"].startswith("https://checkout.stripe.com/") and session["id"]
    line, bearer, form = stripe.calls[-1]
    assert line == "POST /v1/checkout/sessions HTTP/1.1" and bearer == f"Bearer {STRIPE_KEY}"
    assert form["mode"] == "payment" and form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][price_data][unit_amount]"] == "2500"
    assert form["metadata[kraken_customer_id]"] == owner.customer_id
    assert await audited(w, owner, "wallet.checkout") == 1

    event = orjson.dumps({"id": "evt_" + uuid.uuid4().hex, "type": "checkout.session.completed",
                          "data": {"object": {"id": session["id"], "amount_total": 2500,
                                              "currency": "usd", "payment_status": "paid",
                                              "payment_intent": "pi_" + uuid.uuid4().hex,
                                              "metadata": {"kraken_customer_id":
                                                           form["metadata[kraken_customer_id]"]}}}})
    t = int(time.time())
    hook = await http(w.port, "POST", "/v1/webhooks/stripe", event,
                      {"content-type": "application/json",
                       "stripe-signature": f"t={t},v1={sign(WHSEC, t, event)}"})
    assert hook.status == 200, hook.body
    assert await wallet.balance(w.store, owner.customer_id) == before + 25_000_000


async def test_a_session_stripe_refuses_is_a_502_and_nothing_is_audited(env):
    w, stripe, *_ = env
    stripe.refuse_next = True
    audits = await audited(w, w.personal, "wallet.checkout")
    reply = await w.call(w.personal, "POST", "/v1/account/wallet/checkout", {"amount_usd": 5})
    error = assert_error(reply, 502, "stripe_failed")
    assert STRIPE_KEY not in error["message"] and "401" in error["message"]
    assert await audited(w, w.personal, "wallet.checkout") == audits


@pytest.mark.parametrize("role", ["admin", "developer", "restricted"])
async def test_checkout_needs_billing_and_refused_reaches_no_stripe(env, role):
    w, stripe, *_ = env
    calls = len(stripe.calls)
    reply = await w.call(w.members[role], "POST", "/v1/account/wallet/checkout",
                         {"amount_usd": 10})
    error = assert_error(reply, 403, "forbidden", param="role")
    assert "'billing'" in error["message"]
    assert len(stripe.calls) == calls


async def test_checkout_amount_is_bounded(env):
    w, stripe, *_ = env
    calls = len(stripe.calls)
    for bad in (0, -5, "10", 1e9, None):
        reply = await w.call(w.personal, "POST", "/v1/account/wallet/checkout", {"amount_usd": bad})
        assert_error(reply, 400, "invalid_value", param="amount_usd")
    assert len(stripe.calls) == calls


def test_the_stripe_secret_key_comes_from_the_named_variable():
    doc = {"stripe": {"api_base": "http://127.0.0.1:9"}}
    cfg = config.from_mapping(doc, "<t>", env={"STRIPE_SECRET_KEY": STRIPE_KEY})
    assert cfg.stripe.api_key == STRIPE_KEY and STRIPE_KEY not in repr(cfg.stripe)
    cfg = config.from_mapping({"stripe": {"api_key_env": "MY_SK"}}, "<t>", env={"MY_SK": "sk_2"})
    assert cfg.stripe.api_key == "sk_2" and cfg.stripe.api_base == "https://api.stripe.com"


# ---- erasure ---------------------------------------------------------------------------------

def db_files(tmp: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in tmp.rglob("*")
            if p.is_file() and p.suffix not in (".toml", ".log", ".keyring")}


async def test_an_owner_with_other_members_must_hand_over_the_organisation_first(env):
    w, *_ = env
    owner = w.members["owner"]
    error = assert_error(await w.call(owner, "DELETE", "/v1/account"), 409,
                         "organisation_first", param="org_id")
    assert w.org in error["message"]
    assert await service.get_customer(w.store, owner.customer_id)
    assert (await w.call(owner, "GET", "/v1/models")).status == 200


async def test_erasure_removes_the_customer_and_its_key_stops_working(env):
    w, _, tmp, db = env
    marker = uuid.uuid4().hex[:12]
    cus = await service.create_customer(w.store, f"erase-{marker}@example.com", f"Erin {marker}")
    org = (await service.create_organisation(w.store, "Erin's org", cus.id)).id
    me = await new_key(w.store, cus.id, None)
    other = await new_key(w.store, cus.id, org)
    body = orjson.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    chat = await http(w.port, "POST", "/v1/chat/completions", body,
                      {**auth_headers(me.secret), "content-type": "application/json"})
    assert chat.status == 200, chat.body
    await wait_for(lambda: any(r["customer_id"] == cus.id for r in db_rows(db)))
    before = db_files(tmp)
    assert any(cus.id.encode() in b for b in before.values())
    assert any(marker.encode() in b for b in before.values())

    reply = await w.call(me, "DELETE", "/v1/account")
    assert reply.status == 200, reply.body
    assert reply.json()["erased"] is True and reply.json()["requests_deleted"] == 1
    with pytest.raises(service.NotFoundError):
        await service.get_customer(w.store, cus.id)
    for key in (me, other):
        assert (await w.call(key, "GET", "/v1/models")).status == 401
        assert (await w.call(key, "GET", "/v1/account")).status == 401
    after = db_files(tmp)
    for needle in (cus.id.encode(), marker.encode()):
        assert not [name for name, blob in after.items() if needle in blob], needle
    # the rest is untouched
    assert await service.get_customer(w.store, w.members["developer"].customer_id)
    assert (await w.call(w.members["developer"], "GET", "/v1/models")).status == 200


async def test_a_member_erases_only_themself_and_stays_out_of_the_organisation(env):
    w, *_ = env
    cid = await new_customer(w.store, "leaver")
    await service.add_member(w.store, w.org, cid, "developer")
    leaver = await new_key(w.store, cid, w.org)
    members_before = len(await service.list_members(w.store, w.org))
    reply = await w.call(leaver, "DELETE", "/v1/account")
    assert reply.status == 200, reply.body
    assert len(await service.list_members(w.store, w.org)) == members_before - 1
    assert await service.get_customer(w.store, w.members["owner"].customer_id)
    assert (await w.call(leaver, "GET", "/v1/account")).status == 401


async def test_erasure_leaves_no_key_id_of_the_customer_in_the_audit_log(env):
    """The customer's keys named the actor of its audited actions (``key:<id>``), the erasure's
    own entry included: erasure blanks them like target and subject, and the chain verifies."""
    w, *_ = env
    cid = await new_customer(w.store, "actor")
    me = await new_key(w.store, cid, None)
    made = await w.call(me, "POST", "/v1/account/keys", {"name": "second"})
    assert made.status == 201, made.body
    second = Member(cid, made.json()["key"]["id"], made.json()["secret"])
    assert (await w.call(second, "POST", "/v1/account/object")).status == 200
    assert (await w.call(me, "DELETE", f"/v1/account/keys/{second.key_id}")).status == 200
    assert (await w.call(me, "POST", "/v1/account/object")).status == 200
    assert await audited(w, me, "customer.object") == 1
    assert await audited(w, second, "customer.object") == 1

    reply = await w.call(me, "DELETE", "/v1/account")
    assert reply.status == 200, reply.body
    entries = await audit.list_entries(w.store, limit=100_000)
    assert any(e.action == "customer.erase" for e in entries)
    for key_id in (me.key_id, second.key_id):
        assert not [e for e in entries if key_id in orjson.dumps(e.to_dict()).decode()], key_id
    assert (await audit.verify(w.store)).ok
