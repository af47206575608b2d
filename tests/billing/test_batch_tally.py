"""The guard's batch hooks sum a written batch once per customer (``_Tally``): the debits, the
monthly usage rows, the unwritten counts, the balances and the wallet-debit count must be
exactly what the record-by-record walk (kept below as the reference) produced, for batches
with duplicate ids, records already stored, customers without wallets or ids, other months,
unpriced and zero records, records never noted (replays) and negative amounts."""
from __future__ import annotations

import asyncio
import random

from kraken import metrics
from kraken.billing import wallet
from kraken.billing.guard import BillingGuard, month_of
from kraken.billing.plans import PlanBook
from kraken.store.record import RequestRecord

WALLETS = {"cus_a": 5_000_000, "cus_c": 1}


class FakeBilling:
    """The store's billing calls as the hooks see them, logged."""

    def __init__(self, seen: set[str]):
        self.seen, self.calls = seen, []

    async def seen_requests(self, tx, ids):
        return {i for i in ids if i in self.seen}

    async def debit(self, tx, debits, now):
        self.calls.append(("debit", list(debits)))
        return {c: WALLETS[c] + sum(d for cc, d, _ in debits if cc == c)
                for c, _, _ in debits if c in WALLETS}

    async def add_usage(self, tx, rows):
        self.calls.append(("add_usage", list(rows)))


class Tx:
    def __init__(self, seen):
        self.billing = FakeBilling(seen)


def run(coro):
    return asyncio.run(coro)


async def reference_in_batch(g: BillingGuard, tx, records):
    """The record-by-record hooks as they were (before the per-customer tally)."""
    new = await wallet.new_records(tx, records)
    costs = wallet.batch_costs(records)
    if not new:
        return (records, [], {}, costs)
    by_id = costs[1]
    balances = await wallet.debit_usage(tx, new, costs=by_id)
    sums: dict = {}
    month, start, end = g._span
    for rec in new:
        if not rec.customer_id:
            continue
        ts = rec.ts
        s = sums.setdefault((rec.customer_id, month if start <= ts < end else month_of(ts)), [0, 0])
        s[0] += (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
        s[1] += by_id[rec.request_id]
    if sums:
        await tx.billing.add_usage(tx, [(c, m, t, s) for (c, m), (t, s) in sums.items()])
    return (records, new, balances, costs)


def reference_committed(g: BillingGuard, pending) -> float:
    written, new, balances, (micros, by_id) = pending
    for rec, m in zip(written, micros):
        p = g._unflushed.get(rec.customer_id) if rec.customer_id else None
        if p is not None:
            p[0] -= m
            p[1] -= (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
            if p[0] <= 0 and p[1] <= 0:
                del g._unflushed[rec.customer_id]
    g._balances.update(balances)
    _, start, end = g._span
    for rec in new:
        if rec.customer_id and start <= rec.ts < end:
            u = g._usage.setdefault(rec.customer_id, [0, 0])
            u[0] += (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
            u[1] += by_id[rec.request_id]
    return sum(1 for r in new if r.customer_id in balances and by_id[r.request_id] > 0)


def batch(rng: random.Random, now: float, negative: bool) -> list[RequestRecord]:
    out = []
    for i in range(rng.randrange(1, 40)):
        rid = f"req_{rng.randrange(30):04d}"  # duplicates within the batch and across batches
        cost = rng.choice([None, 0.0, 0.00123, 0.5, 2e-7])
        if negative and rng.random() < 0.2:
            cost = -0.004
        ts = now + rng.choice([0.0, 0.0, -40 * 86400.0, 40 * 86400.0])  # other months too
        prompt = rng.choice([None, 0, 10, 1000])
        if negative and rng.random() < 0.1:
            prompt = -50
        out.append(RequestRecord(ts, rid, rng.choice(["cus_a", "cus_b", "cus_c", None, ""]), "m",
                                 "m", "p", prompt, rng.choice([None, 0, 5]), 0, 0, 1.0, 1.0, "chat",
                                 cost, rng.choice([None, 0.0, 0.0001]), False, None, 200))
    return out


def test_per_customer_tally_matches_the_record_by_record_walk():
    now = 1_796_500_000.0
    for seed in range(300):
        rng = random.Random(seed)
        new_g, ref_g = (BillingGuard(PlanBook(), clock=lambda: now) for _ in range(2))
        for g in (new_g, ref_g):  # usage already in the snapshot from a refresh
            g._usage = {"cus_a": [7, 70]}
        for _ in range(3):
            records = batch(rng, now, negative=seed % 3 == 0)
            for rec in records:
                if rng.random() < 0.8:  # the rest: replays, never noted
                    new_g.note(rec)
                    ref_g.note(rec)
            seen = {f"req_{i:04d}" for i in range(30) if rng.random() < 0.2}
            tx_new, tx_ref = Tx(seen), Tx(seen)
            before = metrics.WALLET_DEBITS.get()
            run(new_g.in_batch(tx_new, records))
            new_g.committed()
            debited = metrics.WALLET_DEBITS.get() - before
            ref_debited = reference_committed(ref_g, run(reference_in_batch(ref_g, tx_ref, records)))
            assert tx_new.billing.calls == tx_ref.billing.calls, seed
            assert debited == ref_debited, seed
            assert new_g._unflushed == ref_g._unflushed, seed
            assert new_g._usage == ref_g._usage, seed
            assert new_g._balances == ref_g._balances, seed


def test_a_batch_with_a_negative_amount_is_taken_off_record_by_record():
    """In order, the first record (50 tokens, a replay never noted) clears the customer's
    unwritten 40 and the second (-100) finds nothing to take off; summed (-50) would have
    left 90 unwritten tokens."""
    g = BillingGuard(PlanBook())
    g._unflushed = {"cus_a": [0, 40]}
    recs = [RequestRecord(1e9, f"r{i}", "cus_a", "m", "m", "p", tokens, 0, 0, 0, 1.0, 1.0, "chat",
                          None, None, False, None, 200) for i, tokens in enumerate((50, -100))]
    run(g.in_batch(Tx(set()), recs))
    g.committed()
    assert g._unflushed == {}


def test_note_counts_each_customers_unwritten_usage_once_per_record():
    g = BillingGuard(PlanBook())

    def rec(i, customer, prompt, cost):
        return RequestRecord(1e9, f"n{i}", customer, "m", "m", "p", prompt, 5, 0, 0, 1.0, 1.0,
                             "chat", cost, None, False, None, 200)

    g.note(rec(1, "cus_a", 10, 0.001))
    g.note(rec(2, "cus_a", 20, None))
    g.note(rec(3, "cus_b", 0, None))
    g.note(rec(4, None, 99, 0.5))  # no customer: not counted
    g.note(RequestRecord(1e9, "n5", "cus_c", "m", "m", "p", None, None, 0, 0, 1.0, 1.0, "chat",
                         None, None, False, None, 200))  # nothing to count: no entry
    assert g._unflushed == {"cus_a": [1000, 40], "cus_b": [0, 5]}
    assert g.usage("cus_a") == (40, 1000) and g.balance_micros("cus_a") == -1000
