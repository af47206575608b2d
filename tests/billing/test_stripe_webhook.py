"""The Stripe-compatible webhook: signatures computed here (no network), posted to a real
Kraken process; top-ups are idempotent per payment and the body never reaches the logs."""
from __future__ import annotations

import logging
import sqlite3
import time

import orjson
import pytest

from kraken.billing.stripe_webhook import (
    SignatureError,
    sign,
    top_up_of,
    verify_signature,
)
from kraken.errors import BadRequest
from tests.harness import (
    KrakenProcess,
    free_port,
    http,
    kraken_mapping,
    running_kraken,
    running_mock,
    write_toml,
)

pytestmark = pytest.mark.anyio

SECRET = "whsec_test_0123456789abcdef"
CANARY = "CANARY-STRIPE-BODY-5d1e"
NOW = 1_800_000_000


def header(body: bytes, *, secret: str = SECRET, t: int | None = None, extra: str = "") -> str:
    t = int(time.time()) if t is None else t
    return f"t={t},v1={sign(secret, t, body)}{extra}"


def checkout(event_id: str, *, cents: int = 2500, customer: str = "cus_a", pi: str | None = "pi_1",
             status: str = "paid", currency: str = "usd") -> bytes:
    return orjson.dumps({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_test_1", "object": "checkout.session", "amount_total": cents,
                            "currency": currency, "payment_status": status, "payment_intent": pi,
                            "metadata": {"kraken_customer_id": customer, "note": CANARY}}}})


def intent(event_id: str, *, pi: str = "pi_1", cents: int = 2500) -> bytes:
    return orjson.dumps({
        "id": event_id, "type": "payment_intent.succeeded",
        "data": {"object": {"id": pi, "object": "payment_intent", "amount_received": cents,
                            "currency": "usd", "metadata": {"kraken_customer_id": "cus_a"}}}})


# ---- signature verification ----------------------------------------------------------

def test_a_valid_signature_returns_its_timestamp():
    body = b'{"id":"evt_1"}'
    assert verify_signature(header(body, t=NOW).encode(), body, SECRET, tolerance_s=300, now=NOW + 10) == NOW


def test_any_of_several_v1_signatures_may_match():
    body = b'{"id":"evt_1"}'
    h = f"t={NOW},v1={'0' * 64},v0=abc,v1={sign(SECRET, NOW, body)}"
    assert verify_signature(h.encode(), body, SECRET, tolerance_s=300, now=NOW) == NOW


@pytest.mark.parametrize("make, message", [
    (lambda b: None, "Missing Stripe-Signature"),
    (lambda b: f"v1={sign(SECRET, NOW, b)}", "no t= timestamp"),
    (lambda b: f"t={NOW}", "no v1= signature"),
    (lambda b: "t=yesterday,v1=00", "not a Unix timestamp"),
    (lambda b: header(b, t=NOW - 301), "outside the 300 s tolerance"),
    (lambda b: header(b, t=NOW + 301), "outside the 300 s tolerance"),
    (lambda b: header(b, t=NOW, secret="whsec_other"), "does not match"),
    (lambda b: header(b + b" ", t=NOW), "does not match"),
    (lambda b: "t=1," + "v1=0," * 1000, "too long"),
])
def test_bad_signatures_are_refused_with_a_clear_reason(make, message):
    body = b'{"id":"evt_1"}'
    h = make(body)
    # the body is signed as received: the last case signs one extra space
    signed_body = body
    with pytest.raises(SignatureError, match=message) as err:
        verify_signature(h.encode() if h else None, signed_body, SECRET, tolerance_s=300, now=NOW)
    assert err.value.status == 400 and err.value.code == "invalid_signature"


def test_checkout_and_payment_intent_of_one_payment_share_a_ref():
    a = top_up_of(orjson.loads(checkout("evt_1")), "kraken_customer_id")
    b = top_up_of(orjson.loads(intent("evt_2")), "kraken_customer_id")
    assert a == b == ("cus_a", 25_000_000, "stripe:pi_1")


@pytest.mark.parametrize("body, message", [
    (checkout("e", customer=""), "metadata.kraken_customer_id"),
    (checkout("e", currency="eur"), "currency must be 'usd'"),
    (checkout("e", cents=0), "amount_total must be a positive integer"),
])
def test_handled_events_missing_what_a_top_up_needs_name_the_field(body, message):
    with pytest.raises(BadRequest, match=message):
        top_up_of(orjson.loads(body), "kraken_customer_id")


def test_unpaid_checkouts_and_other_events_are_ignored():
    assert top_up_of(orjson.loads(checkout("e", status="unpaid")), "kraken_customer_id") is None
    assert top_up_of({"type": "customer.created", "data": {"object": {}}}, "kraken_customer_id") is None


# ---- a real Kraken process ------------------------------------------------------------

def ledger(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT wallet_id, kind, amount_micros, ref FROM wallet_transactions"
                            " ORDER BY id").fetchall()


async def post(port: int, body: bytes, sig: str | None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if sig is not None:
        headers["stripe-signature"] = sig
    r = await http(port, "POST", "/v1/webhooks/stripe", body, headers)
    return r.status, r.json()


async def test_webhook_in_a_real_process_tops_up_once_per_payment(tmp_path):
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"host": "127.0.0.1", "port": port},
                             stripe={"webhook_secret": SECRET})
        cfg_path = tmp_path / "kraken.toml"
        write_toml(cfg_path, doc)
        log = tmp_path / "kraken.log"
        proc = KrakenProcess(cfg_path, port, log, args=["--log-level", "DEBUG"])
        proc.start()
        try:
            body = checkout("evt_1")
            status, reply = await post(port, body, header(body))
            assert status == 200 and reply["handled"] and not reply["duplicate"]
            # Stripe redelivers the same event; then the PaymentIntent's own event arrives.
            status, reply = await post(port, body, header(body))
            assert status == 200 and reply["duplicate"]
            other = intent("evt_2")
            status, reply = await post(port, other, header(other))
            assert status == 200 and reply["duplicate"]

            status, reply = await post(port, body, header(body, secret="whsec_wrong"))
            assert status == 400
            assert reply["error"]["code"] == "invalid_signature"
            assert "does not match" in reply["error"]["message"]
            status, reply = await post(port, body, None)
            assert status == 400 and "Missing Stripe-Signature" in reply["error"]["message"]
            stale = int(time.time()) - 3600
            status, reply = await post(port, body, header(body, t=stale))
            assert status == 400 and "tolerance" in reply["error"]["message"]

            second = checkout("evt_3", pi="pi_2", cents=1000)
            status, reply = await post(port, second, f"t=1,v1=00,{header(second)}")
            assert status == 400 and "more than one t=" in reply["error"]["message"]
            status, reply = await post(port, second, header(second, extra=",v1=" + "f" * 64))
            assert status == 200 and not reply["duplicate"]

            ignored = orjson.dumps({"id": "evt_4", "type": "invoice.created", "data": {"object": {}}})
            status, reply = await post(port, ignored, header(ignored))
            assert status == 200 and reply == {"received": True, "handled": False}

            r = await http(port, "GET", "/v1/webhooks/stripe")
            assert r.status == 405
        finally:
            proc.signal(15)
            assert proc.wait() == 0
        assert ledger(tmp_path / "kraken.db") == [
            ("cus_a", "top_up", 25_000_000, "stripe:pi_1"),
            ("cus_a", "top_up", 10_000_000, "stripe:pi_2")]
        text = log.read_bytes()
        assert b"stripe top-up applied" in text  # the process did log at DEBUG
        assert CANARY.encode() not in text and b"whsec_" not in text


async def test_without_a_secret_there_is_no_webhook_endpoint(tmp_path):
    from tests.harness import running_kraken

    async with running_mock() as mock, running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
        body = checkout("evt_1")
        r = await http(k.port, "POST", "/v1/webhooks/stripe", body, {"stripe-signature": header(body)})
        assert r.status == 404


def event(kind: str, obj: dict | None) -> bytes:
    """A signed-payload event of ``kind``; ``obj`` None leaves out ``data`` altogether."""
    return orjson.dumps({"id": "evt_x", "type": kind,
                         **({} if obj is None else {"data": {"object": obj}})})


async def test_signed_events_that_are_not_krakens_are_acknowledged_and_change_nothing(tmp_path):
    """One Stripe account, other products too: a correctly signed event Kraken does not handle
    must get a 2xx, or Stripe retries it for days and may disable the endpoint (and with it
    the real top-ups). Kraken's own malformed payments and bad signatures are still 400."""
    paid = {"object": "payment_intent", "id": "pi_shop", "amount_received": 4200, "currency": "eur"}
    session = {"id": "cs_shop", "amount_total": 4200, "currency": "usd", "payment_status": "paid",
               "payment_intent": "pi_shop2"}
    others = [
        event("payment_intent.succeeded", {**paid, "metadata": {"order": "shop-42"}}),
        event("payment_intent.succeeded", paid),  # no metadata at all
        event("checkout.session.completed", {**session, "metadata": {}}),
        event("checkout.session.async_payment_succeeded", {**session, "metadata": None}),
        event("customer.subscription.updated", None),  # a type Kraken does not handle
    ]
    ours = {"object": "payment_intent", "id": "pi_k", "currency": "usd",
            "metadata": {"kraken_customer_id": "cus_a"}}
    async with running_mock() as mock, running_kraken(kraken_mapping(
            tmp_path, mock.port, stripe={"webhook_secret": SECRET})) as k:
        for body in others:
            assert await post(k.port, body, header(body)) == (
                200, {"received": True, "handled": False}), body
        body = others[0]
        status, reply = await post(k.port, body, header(body, secret="whsec_wrong"))
        assert status == 400 and reply["error"]["code"] == "invalid_signature"
        status, reply = await post(k.port, body, header(body, t=int(time.time()) - 3600))
        assert status == 400 and "tolerance" in reply["error"]["message"]
        no_amount = event("payment_intent.succeeded", ours)
        status, reply = await post(k.port, no_amount, header(no_amount))
        assert status == 400 and "amount_received" in reply["error"]["message"]
        euros = event("payment_intent.succeeded",
                      {**ours, "amount_received": 500, "currency": "eur"})
        status, reply = await post(k.port, euros, header(euros))
        assert status == 400 and "currency" in reply["error"]["message"]
    assert ledger(tmp_path / "kraken.db") == []


async def test_refusals_anyone_can_post_are_counted_each_and_logged_once_per_interval(
        tmp_path, caplog, monkeypatch):
    """The webhook is on the public listener: unsigned posts are refused (400) and counted
    each, but a loop of them is no loop of warnings: one line per interval, the next naming
    how many were held back."""
    from kraken.billing import stripe_webhook
    from kraken.logs import Throttle

    now = [0.0]
    monkeypatch.setattr(stripe_webhook, "_REFUSAL_LINES", Throttle(10.0, clock=lambda: now[0]),
                        raising=False)
    caplog.set_level(logging.WARNING, "kraken")
    counted = 'kraken_stripe_webhooks_total{outcome="bad_signature"} '

    async def refusals() -> float:
        text = (await http(k.port, "GET", "/metrics")).body.decode()
        return next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith(counted))

    async with running_mock() as mock, running_kraken(kraken_mapping(
            tmp_path, mock.port, stripe={"webhook_secret": SECRET})) as k:
        before = await refusals()
        body = checkout("evt_1")
        for _ in range(20):
            assert (await post(k.port, body, None))[0] == 400
        now[0] += 10.0
        assert (await post(k.port, body, "t=1,v1=00"))[0] == 400
        assert await refusals() - before == 21
    lines = [r.getMessage() for r in caplog.records if "stripe webhook refused" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[1].endswith("(19 more since the last line)")
    assert all(CANARY not in line for line in lines)


class _Sink:
    """Keeps the one response the webhook gives."""

    def respond(self, status: int, headers, body: bytes) -> None:
        self.reply = (status, orjson.loads(body))


async def test_webhook_credits_the_wallet_once_per_payment_on_each_backend(backend):
    """The handler over each store backend (tests/billing/conftest.py): one top-up per payment
    whichever event carries it, the guard's balance updated at once, the ledger in the store."""
    from kraken.billing.guard import BillingGuard
    from kraken.billing.plans import PlanBook
    from kraken.billing.stripe_webhook import PATH, StripeWebhook
    from kraken.http.exchange import Request

    store = await backend.open()
    guard = BillingGuard(PlanBook())
    hook = StripeWebhook(store, guard, SECRET)

    async def post(body: bytes) -> tuple[int, dict]:
        sink = _Sink()
        await hook.handle(Request("POST", PATH, ((b"stripe-signature", header(body).encode()),),
                                  body, "127.0.0.1", 0), sink)
        return sink.reply

    try:
        first = await post(checkout("evt_1"))
        assert first[0] == 200 and not first[1]["duplicate"]
        assert (await post(checkout("evt_1")))[1]["duplicate"]
        assert (await post(intent("evt_2")))[1]["duplicate"]  # the same payment's other event
        assert not (await post(checkout("evt_3", pi="pi_2", cents=1000)))[1]["duplicate"]
        assert guard.balance_micros("cus_a") == 35_000_000
        rows = await store.fetch_all("SELECT wallet_id, kind, amount_micros, ref FROM "
                                     "wallet_transactions ORDER BY id")
        assert rows == [("cus_a", "top_up", 25_000_000, "stripe:pi_1"),
                        ("cus_a", "top_up", 10_000_000, "stripe:pi_2")]
    finally:
        await store.close()


async def test_events_of_one_payment_delivered_at_once_credit_once_and_all_succeed(backend):
    """Stripe sends a Checkout payment's two events within milliseconds (and redelivers), each
    to whichever host the load balancer picks: every delivery must get 200 (one top-up, the
    rest duplicates), not an error from the ledger's unique ref that Stripe retries for days."""
    import asyncio

    from kraken.billing.guard import BillingGuard
    from kraken.billing.plans import PlanBook
    from kraken.billing.stripe_webhook import PATH, StripeWebhook
    from kraken.http.exchange import Request

    stores = [await backend.open() for _ in range(6)]  # one per host

    async def post(store, body: bytes) -> tuple[int, dict]:
        sink = _Sink()
        hook = StripeWebhook(store, BillingGuard(PlanBook()), SECRET)
        await hook.handle(Request("POST", PATH, ((b"stripe-signature", header(body).encode()),),
                                  body, "127.0.0.1", 0), sink)
        return sink.reply

    try:
        for store in stores:  # connected, as a running host is
            await store.fetch_all("SELECT 1")
        bodies = [checkout(f"evt_c{i}") if i % 2 else intent(f"evt_i{i}") for i in range(6)]
        replies = await asyncio.gather(*(post(s, b) for s, b in zip(stores, bodies)),
                                       return_exceptions=True)
        assert all(not isinstance(r, BaseException) and r[0] == 200 for r in replies), replies
        assert sorted(r[1]["duplicate"] for r in replies) == [False] + [True] * 5
        assert await stores[0].fetch_all(
            "SELECT wallet_id, amount_micros FROM wallet_transactions") == [("cus_a", 25_000_000)]
    finally:
        for store in stores:
            await store.close()


async def test_a_payment_of_an_erased_customer_credits_nothing_and_brings_no_id_back(backend):
    """A Checkout paid (or redelivered by Stripe) after its customer was erased: crediting it
    would recreate the wallet and a ledger row under the erased id. It is refused (400, Stripe
    shows the failing delivery: refund the payment), the ledger holds nothing of the customer.
    On PostgreSQL a credit still in its transaction when the erasure starts is waited for and
    then erased with the rest."""
    import asyncio

    from kraken.accounts import service
    from kraken.billing.guard import BillingGuard
    from kraken.billing.plans import PlanBook
    from kraken.billing.stripe_webhook import PATH, StripeWebhook
    from kraken.http.exchange import Request
    from kraken.privacy.erase import erase_customer
    from kraken.store.billing_sql import BillingRepository

    store = await backend.open()

    async def post(body: bytes) -> tuple[int, dict]:
        sink = _Sink()
        hook = StripeWebhook(store, BillingGuard(PlanBook()), SECRET)
        await hook.handle(Request("POST", PATH, ((b"stripe-signature", header(body).encode()),),
                                  body, "127.0.0.1", 0), sink)
        return sink.reply

    async def holding(customer_id: str) -> list:
        return await store.fetch_all(backend.sql(
            "SELECT wallet_id FROM wallets WHERE wallet_id = ? UNION ALL "
            "SELECT wallet_id FROM wallet_transactions WHERE wallet_id = ?"),
            (customer_id, customer_id))

    real_insert = BillingRepository.insert_transaction
    try:
        gone = (await service.create_customer(store, "paid-late@example.com")).id
        assert (await post(checkout("evt_1", customer=gone)))[0] == 200
        await erase_customer(store, gone, actor="test")
        status, body = await post(checkout("evt_2", customer=gone, pi="pi_2"))
        assert status == 400 and "erased" in body["error"]["message"]
        assert gone not in body["error"]["message"]
        assert await holding(gone) == []
        if backend.name != "postgres":
            return  # SQLite: the credit's and the erasure's transactions never overlap
        late = (await service.create_customer(store, "paying@example.com")).id
        inserting, erased = asyncio.Event(), asyncio.Event()
        watcher = await backend.open()  # its own pool: the credit and the erasure hold store's

        async def insert_transaction(self, tx, row):  # held until the erasure waits or ends
            inserting.set()
            async with asyncio.timeout(10):
                while not erased.is_set() and not await watcher.fetch_all(
                        "SELECT 1 FROM pg_locks WHERE NOT granted"):
                    await asyncio.sleep(0.01)
            await real_insert(self, tx, row)

        BillingRepository.insert_transaction = insert_transaction
        paying = asyncio.ensure_future(post(checkout("evt_3", customer=late, pi="pi_3")))
        await inserting.wait()
        try:
            await erase_customer(store, late, actor="test")
        finally:
            erased.set()
        await watcher.close()
        assert (await paying)[0] == 200  # it committed first; the erasure took it along
        assert await holding(late) == []
    finally:
        BillingRepository.insert_transaction = real_insert
        await store.close()
