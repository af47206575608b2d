"""Per-key lifetime budgets: the guard refuses a key whose token budget (429) or spend budget
(402, provider cost + Kraken fee) is used up, from memory, counting unwritten usage, other
processes' usage and journal replays exactly once; only budgeted keys are held, capped. End to
end: a budgeted key is refused while its sibling keeps working, and budget updates through the
accounts service take effect without a restart (no [plans] configured)."""
from __future__ import annotations

import json
import time

import anyio
import pytest
from harness import http, kraken_mapping, running_kraken, running_mock

from kraken import metrics
from kraken.accounts import service
from kraken.billing.guard import BillingGuard
from kraken.billing.key_budgets import KeySpendBudgetExceeded, KeyTokenBudgetExceeded
from kraken.billing.plans import PlanBook
from kraken.errors import error_body
from kraken.policy.auth import Principal
from kraken.store.interface import Store
from kraken.store.record import RequestRecord
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

_seq = iter(range(1_000_000))


def rec(key_id: str, customer: str, *, prompt=10, completion=5, cost=None, fee=None,
        request_id=None) -> RequestRecord:
    return RequestRecord(
        ts=time.time(), request_id=request_id or f"req_{next(_seq):07d}", customer_id=customer,
        model_requested="m", model_dispatched="m", provider="p", prompt_tokens=prompt,
        completion_tokens=completion, cached_tokens=0, reasoning_tokens=0, latency_ms=1.0,
        ttfb_ms=1.0, task_type="chat", cost_usd=cost, kraken_fee_usd=fee, fallback_used=False,
        error_type=None, status=200, key_id=key_id)


async def write(store: Store, guard: BillingGuard, records: list[RequestRecord]) -> None:
    """What the meter's writer does with a batch: insert with the hook, then ``committed``."""
    await store.insert_records(records, guard.in_batch)
    guard.committed()


def principal(key, **budgets) -> Principal:
    return Principal(key_id=key.id, customer_id=key.customer_id, **budgets)


@pytest.fixture
async def store(backend):
    """Each store-backed test runs once per backend (tests/billing/conftest.py)."""
    s = await backend.open()
    yield s
    await s.close()


@pytest.fixture
async def customer(store):
    return await service.create_customer(store, "budget@example.com", "Budget")


def guard(**kw) -> BillingGuard:
    return BillingGuard(PlanBook.from_mapping({}), **kw)


async def test_token_budget_refuses_with_429_once_used_up_and_never_names_the_key(store, customer):
    created = await service.create_key(store, customer.id, token_budget=30, rounds=4)
    g = guard()
    await g.refresh(store)
    who = principal(created.key, token_budget=30)
    g.check_key_budget(who)
    await write(store, g, [rec(created.key.id, customer.id)])  # 15 of 30
    g.check_key_budget(who)
    await write(store, g, [rec(created.key.id, customer.id)])  # 30 of 30
    with pytest.raises(KeyTokenBudgetExceeded) as refused:
        g.check_key_budget(who)
    assert refused.value.status == 429
    body = json.loads(error_body(refused.value))["error"]
    assert body["code"] == "key_token_budget_exceeded"
    assert "30 of 30 tokens" in body["message"]
    assert created.key.id not in body["message"] and created.plaintext not in body["message"]
    g.check_key_budget(principal(created.key, token_budget=31))  # a raised budget admits again


async def test_spend_budget_counts_cost_plus_fee_and_refuses_with_402(store, customer):
    created = await service.create_key(store, customer.id, spend_budget_usd=0.003, rounds=4)
    g = guard()
    await g.refresh(store)
    who = principal(created.key, spend_budget_usd=0.003)
    await write(store, g, [rec(created.key.id, customer.id, cost=0.001, fee=0.0005)])
    assert g.key_budgets.used(created.key.id) == (15, 1500)
    g.check_key_budget(who)  # 0.0015 of 0.003: the fee counts, the cost alone would be 0.001
    await write(store, g, [rec(created.key.id, customer.id, cost=0.001, fee=0.0005)])
    with pytest.raises(KeySpendBudgetExceeded) as refused:
        g.check_key_budget(who)
    assert refused.value.status == 402 and refused.value.code == "key_spend_budget_exceeded"
    assert "0.003000 of 0.003000 USD" in refused.value.message


async def test_unwritten_usage_counts_at_once_and_exactly_once_after_commit(store, customer):
    created = await service.create_key(store, customer.id, token_budget=30, rounds=4)
    g = guard()
    await g.refresh(store)
    who = principal(created.key, token_budget=30)
    burst = [rec(created.key.id, customer.id) for _ in range(2)]
    for r in burst:
        g.note(r)  # the requests ended; the writer has not flushed yet
    with pytest.raises(KeyTokenBudgetExceeded):
        g.check_key_budget(who)
    await write(store, g, burst)
    assert g.key_budgets.used(created.key.id) == (30, 0)
    await g.refresh(store)
    assert g.key_budgets.used(created.key.id) == (30, 0)


async def test_other_processes_usage_arrives_by_refresh_and_replays_count_once(store, customer):
    created = await service.create_key(store, customer.id, token_budget=40, rounds=4)
    here, there = guard(), guard()
    await here.refresh(store)
    await there.refresh(store)
    batch = [rec(created.key.id, customer.id), rec(created.key.id, customer.id)]
    await write(store, there, batch)
    assert here.key_budgets.used(created.key.id) == (0, 0)
    await here.refresh(store)
    assert here.key_budgets.used(created.key.id) == (30, 0)
    await write(store, here, batch)  # a crash-journal replay of records already stored
    assert here.key_budgets.used(created.key.id) == (30, 0)
    here.check_key_budget(principal(created.key, token_budget=40))


async def test_only_budgeted_keys_are_held_up_to_the_cap_and_the_size_is_exported(store, customer):
    budgeted = [await service.create_key(store, customer.id, token_budget=100, rounds=4)
                for _ in range(3)]
    plain = await service.create_key(store, customer.id, rounds=4)
    g = guard(max_budget_keys=2)
    await g.refresh(store)
    assert len(g.key_budgets) == 2
    assert g.key_budgets.used(plain.key.id) is None
    assert g.key_budgets.used(budgeted[0].key.id) is None  # the oldest is past the cap
    gauge = metrics.BILLING_SNAPSHOT_ENTRIES.labels("key_budgets")._value.get()
    assert gauge == 2
    g.note(rec(plain.key.id, customer.id))  # an unbudgeted key is never counted
    assert g.key_budgets.used(plain.key.id) is None


async def test_a_budget_set_later_counts_earlier_usage_after_the_next_refresh(store, customer):
    created = await service.create_key(store, customer.id, rounds=4)
    g = guard()
    await g.refresh(store)
    await write(store, g, [rec(created.key.id, customer.id)])  # 15 tokens, no budget yet
    await service.update_key(store, created.key.id, token_budget=10)
    who = principal(created.key, token_budget=10)
    woken = []
    g.key_budgets.wake = lambda: woken.append(1)
    g.check_key_budget(who)  # not in the snapshot yet: admitted, and a refresh is asked for
    assert woken == [1]
    await g.refresh(store)
    with pytest.raises(KeyTokenBudgetExceeded):
        g.check_key_budget(who)


# ---- end to end: a real Kraken in this loop, the mock provider, no [plans] ------------------

def _chat_body() -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       "mock": {"usage": {"prompt_tokens": 10, "completion_tokens": 5}}}).encode()


async def _chat(port: int, key: str):
    return await http(port, "POST", "/v1/chat/completions", _chat_body(),
                      {"Authorization": f"Bearer {key}"})


async def _until_status(port: int, key: str, status: int, seconds: float = 5.0):
    """Poll (bounded) until ``key`` gets ``status``; the last reply."""
    with anyio.fail_after(seconds):
        while (reply := await _chat(port, key)).status != status:
            await anyio.sleep(0.02)
    return reply


async def test_gateway_refuses_a_key_past_its_token_budget_while_its_sibling_works(tmp_path):
    db = tmp_path / "kraken.db"
    store = await SqliteStore.open(str(db))
    try:
        cus = await service.create_customer(store, "e2e-budget@example.com")
        capped = await service.create_key(store, cus.id, token_budget=30, rounds=4)
        sibling = await service.create_key(store, cus.id, rounds=4)
        async with running_mock() as mock, running_kraken(
                kraken_mapping(tmp_path, mock.port, wallet={"refresh_interval_s": 600})) as k:
            # A 10-minute refresh: a budget set later must arrive through the early wake-up.
            for _ in range(2):  # 15 tokens each: 30 of 30
                assert (await _chat(k.port, capped.plaintext)).status == 200
            refused = await _until_status(k.port, capped.plaintext, 429)
            error = refused.json()["error"]
            assert error["code"] == "key_token_budget_exceeded"
            assert error["type"] == "quota_exceeded"
            assert "token budget" in error["message"]
            for secret in (capped.plaintext, capped.key.id):
                assert secret.encode() not in refused.body
            assert (await _chat(k.port, sibling.plaintext)).status == 200

            await service.update_key(store, capped.key.id, token_budget=1000)
            await _until_status(k.port, capped.plaintext, 200)  # the raised budget applies

            await service.update_key(store, sibling.key.id, token_budget=1)  # 15 used already
            again = await _until_status(k.port, sibling.plaintext, 429)
            assert again.json()["error"]["code"] == "key_token_budget_exceeded"
    finally:
        await store.close()
