"""Plans: config parsing, allowed models (403), monthly caps (429/402), prepaid refusal (402),
per-plan fees - checked in memory and end to end through a real Kraken and mock provider."""
from __future__ import annotations

import sqlite3
import time
from decimal import Decimal

import orjson
import pytest

from kraken import config
from kraken.billing import wallet
from kraken.billing.fees import FeeSchedule
from kraken.billing.guard import (
    BillingGuard,
    InsufficientBalance,
    ModelNotAllowed,
    MonthlyTokenCapReached,
)
from kraken.billing.plans import PlanBook
from kraken.billing.settings import billing_settings
from kraken.store import SqliteStore
from tests.harness import (
    write_db,
    auth_headers,
    db_rows,
    http,
    kraken_mapping,
    running_kraken,
    running_mock,
    wait_for,
)

pytestmark = pytest.mark.anyio

PRICES = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}


def chat(model: str = "mock-gpt", prompt: int = 1000, completion: int = 500) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                         "mock": {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}})


# ---- config and in-memory checks ------------------------------------------------------

def test_no_plans_means_one_unlimited_postpaid_default_plan():
    book = PlanBook.from_mapping({})
    plan = book.get("anything")
    assert plan.name == "default" and not plan.prepaid and plan.allows("x")
    assert (plan.rpm, plan.tpm, plan.max_concurrent, plan.monthly_token_cap) == (0, 0, 0, 0)


def test_plans_parse_and_unknown_names_fall_back_to_the_default():
    book = PlanBook.from_mapping({
        "default": "free",
        "free": {"rpm": 10, "tpm": 1000, "max_concurrent": 2, "allowed_models": ["mock-gpt"],
                 "monthly_token_cap": 5000, "monthly_spend_cap_usd": 1.5, "prepaid": True},
        "pro": {"rpm": 600, "fee_percent": 3, "byok_fee_percent": 1}})
    assert book.get("pro").rpm == 600 and book.get("nope").name == "free"
    assert book.get(None).monthly_spend_cap_micros == 1_500_000


@pytest.mark.parametrize("raw, message", [
    ({"free": {"rpm": -1}}, "plans.free.rpm must be a non-negative integer"),
    ({"free": {"prepaid": "yes"}}, "plans.free.prepaid must be true or false"),
    ({"free": {"allowed_models": "mock-gpt"}}, "plans.free.allowed_models must be a list"),
    ({"free": {"speed": 1}}, "unknown key plans.free.speed"),
    ({"free": {"fee_percent": 150}}, "plans.free.fee_percent must be between 0 and 100"),
    ({"default": "gold"}, "plans.default names 'gold'"),
])
def test_bad_plan_config_names_the_key_and_file(raw, message):
    with pytest.raises(config.ConfigError, match=f"kraken.toml: .*{message}"):
        billing_settings(config.from_mapping({"plans": raw}, "kraken.toml", env={}))


def test_plan_fees_override_the_fee_schedule():
    book = PlanBook.from_mapping({"pro": {"fee_percent": 2.5}, "byok": {"byok_fee_percent": 1}})
    fees = book.fee_schedule(FeeSchedule.from_mapping({"managed_pct": 5}))
    assert fees.rule_for("pro").managed_pct == Decimal("2.5")
    assert fees.rule_for("pro").byok_pct == Decimal(0)
    assert fees.rule_for("byok").managed_pct == Decimal(5) and fees.rule_for("byok").byok_pct == Decimal(1)
    # $0.002 at 2.5% = $0.00005
    assert fees.kraken_fee_usd(0.002, byok=False, plan="pro") == 0.00005


def guard(plans: dict, **kw) -> BillingGuard:
    return BillingGuard(PlanBook.from_mapping(plans), **kw)


def test_model_outside_the_plan_is_refused_with_403():
    g = guard({"free": {"allowed_models": ["mock-gpt"]}, "default": "free"})
    g.check("c", "mock-gpt")
    with pytest.raises(ModelNotAllowed, match="'gpt-4o' is not available on the 'free' plan") as err:
        g.check("c", "gpt-4o")
    assert err.value.status == 403 and err.value.code == "model_not_allowed"


def test_plan_on_the_principal_wins_over_the_default():
    g = guard({"free": {"allowed_models": ["a"]}, "pro": {}, "default": "free"})
    g.check("c", "b", "pro")
    with pytest.raises(ModelNotAllowed):
        g.check("c", "b", None)


def test_prepaid_needs_a_positive_balance_and_the_minimum():
    g = guard({"pre": {"prepaid": True}, "default": "pre"}, min_balance_micros=500)
    with pytest.raises(InsufficientBalance, match="holds 0.000000 USD") as err:
        g.check("c", "m")
    assert err.value.status == 402 and err.value.code == "insufficient_balance"
    g.note_balance("c", 499)
    with pytest.raises(InsufficientBalance, match="minimum 0.000500 USD"):
        g.check("c", "m")
    g.note_balance("c", 500)
    g.check("c", "m")


def test_postpaid_plans_never_look_at_the_balance():
    g = guard({"post": {"prepaid": False}, "default": "post"})
    g.note_balance("c", -10_000_000)
    g.check("c", "m")


# ---- end to end: a real Kraken in front of the mock ------------------------------------

async def until(predicate, seconds: float = 10.0):
    """Poll an async condition with a hard bound (wait_for takes sync predicates)."""
    import anyio

    with anyio.fail_after(seconds):
        while not (value := await predicate()):
            await anyio.sleep(0.01)
    return value


def wallet_balance(db) -> list:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT wallet_id, balance_micros FROM wallets").fetchall()


async def test_end_to_end_model_not_allowed_is_403_openai_style(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, plans={"default": "free",
                                                        "free": {"allowed_models": ["mock-gpt"]}})
        async with running_kraken(doc) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", chat("gpt-4o"), auth_headers())
            assert r.status == 403
            assert r.json()["error"]["code"] == "model_not_allowed"
            assert "not available on the 'free' plan" in r.json()["error"]["message"]
            ok = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert ok.status == 200
        rows = db_rows(k.db_path)
        assert sorted(r["status"] for r in rows) == [200, 403]


async def test_end_to_end_prepaid_402_until_topped_up_then_debited_until_empty(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, prices=PRICES, wallet={"refresh_interval_s": 0.05},
                             plans={"default": "pre", "pre": {"prepaid": True, "fee_percent": 10}})
        async with running_kraken(doc) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert r.status == 402
            err = r.json()["error"]
            assert err["code"] == "insufficient_balance" and err["type"] == "insufficient_balance"
            assert "Top up your wallet" in err["message"]

            # A top-up from another process (as `kraken wallet topup` does) is seen by the refresh.
            other = await SqliteStore.open(str(k.db_path))
            try:
                # 1000 prompt tokens at $1/M + 500 completion at $2/M = $0.002; fee 10% = $0.0002
                await wallet.top_up(other, "cust_1", 3_000, "cli-1")  # covers one request, not two
                async def admitted():
                    r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
                    return r if r.status == 200 else None
                await until(admitted)
                await wait_for(lambda: wallet_balance(k.db_path) == [("cust_1", 3_000 - 2_200)])
                await until(admitted)  # 800 µ$ left: still positive, admitted
                await wait_for(lambda: wallet_balance(k.db_path) == [("cust_1", 800 - 2_200)])
                async def refused():  # the snapshot follows the commit by a moment
                    r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
                    assert r.status in (200, 402)
                    return r if r.status == 402 else None
                r = await until(refused)
                assert "holds -0.001400 USD" in r.json()["error"]["message"]
                txs = await wallet.transactions(other, "cust_1")
            finally:
                await other.close()
        assert [t.kind for t in txs] == ["usage_debit", "usage_debit", "top_up"]
        assert sum(t.amount_micros for t in txs) == -1_400
        ok = [r for r in db_rows(k.db_path) if r["status"] == 200]
        assert len(ok) == 2 and all(r["kraken_fee_usd"] == pytest.approx(0.0002) for r in ok)
        assert {t.ref for t in txs if t.kind == "usage_debit"} == {r["request_id"] for r in ok}


async def test_end_to_end_monthly_token_cap_is_429_and_spend_cap_is_402(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, prices=PRICES,
                             plans={"default": "capped", "capped": {"monthly_token_cap": 2000}})
        async with running_kraken(doc) as k:
            first = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert first.status == 200

            async def capped():
                r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
                return r if r.status == 429 else None
            r = await until(capped)
            assert r.json()["error"]["code"] == "monthly_token_cap_exceeded"
            assert int(r.headers["retry-after"]) > 0
        # usage counts as each request ends: exactly the 2 requests before the cap were served
        served = sum(1 for row in db_rows(k.db_path) if row["status"] == 200)
        assert served == 2
        assert "3000 of 2000 tokens used" in r.json()["error"]["message"]
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, prices=PRICES,
                             plans={"default": "capped", "capped": {"monthly_spend_cap_usd": 0.004}})
        # Same database: this month's usage so far is read at startup.
        async with running_kraken(doc) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert r.status == 402
            assert r.json()["error"]["code"] == "monthly_spend_cap_exceeded"
            # each served request cost $0.002 + 5% fee = $0.0021
            assert "0.004200 of 0.004000 USD" in r.json()["error"]["message"]


async def test_customer_plan_comes_from_the_customers_table(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, wallet={"refresh_interval_s": 0.05},
                             plans={"default": "free", "free": {"allowed_models": ["none"]}, "pro": {}})
        async with running_kraken(doc) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert r.status == 403
            await write_db(k.db_path,
                           "INSERT INTO customers (id, email, plan, created_at) VALUES (?, ?, ?, ?)",
                           ("cust_1", "a@example.com", "pro", time.time()))

            async def upgraded():
                r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
                return r.status == 200
            await until(upgraded)


async def test_usage_counts_against_balance_and_caps_before_its_batch_is_written(tmp_path):
    from tests.billing.test_wallet import record

    g = guard({"pre": {"prepaid": True, "monthly_token_cap": 20}, "default": "pre"})
    g.note_balance("cus_a", 1_500)
    rec = record(1)  # 1050 µ$, 15 tokens
    g.note(rec)
    assert g.balance_micros("cus_a") == 450 and g.usage("cus_a") == (15, 1050)
    g.check("cus_a", "m")
    g.note(record(2))
    with pytest.raises(MonthlyTokenCapReached):
        g.check("cus_a", "m")
    store = await SqliteStore.open(str(tmp_path / "k.db"))
    try:
        await wallet.top_up(store, "cus_a", 1_500, "t1")
        await store.insert_records([rec], g.in_batch)
        g.committed()
    finally:
        await store.close()
    # the written one now comes from the store, the other is still unwritten
    assert g.balance_micros("cus_a") == 1_500 - 1050 - 1050
    assert g.usage("cus_a") == (30, 2100)


async def test_every_metered_endpoint_refuses_an_empty_prepaid_wallet(tmp_path):
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, plans={"default": "pre", "pre": {"prepaid": True}})
        async with running_kraken(doc) as k:
            emb = orjson.dumps({"model": "mock-gpt", "input": "hi"})
            r = await http(k.port, "POST", "/v1/embeddings", emb, auth_headers())
            assert r.status == 402 and r.json()["error"]["code"] == "insufficient_balance"
            r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert r.status == 402
