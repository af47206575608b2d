"""The billing statements in PostgreSQL's spelling, for several hosts (``PostgresStore.billing``).

Single-wallet statements are SQLite's with numbered placeholders, except that a wallet about to
change is read ``FOR UPDATE``: its balance cannot move before this transaction ends.

A batch is a handful of statements whatever its size, each taking arrays (``= ANY($1)``,
``unnest``): the "already stored" check, the batch's existing wallets locked ``FOR UPDATE`` in
wallet id order (two batches never wait on each other crosswise; a customer without a wallet gets
no ledger row), one multi-row
ledger insert and one ``usage_monthly`` upsert (rows in key order, for the same reason).

Exactly once across hosts, and never from a stale balance: the ledger insert starts only once
the wallets are locked, so its snapshot holds every ref applied to them (a ref of a wallet is
only ever written by the transaction holding that wallet), and each row's balance_after is the
locked balance plus the running sum of the batch's debits, computed by the database in the
statement itself. The statement-level trigger of migration 8 checks every row against the
locked wallet and moves each wallet's balance once per statement.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kraken.store.billing_sql import STATEMENTS, BillingRepository
from kraken.store.postgres.accounts import numbered
from kraken.store.postgres.schema import ERASURE_LOCK

_PG = {
    "ensure_wallet": ("INSERT INTO wallets (wallet_id, created_ts) VALUES (?, ?) "
                      "ON CONFLICT (wallet_id) DO NOTHING"),
    "wallet_for_change": "SELECT balance_micros FROM wallets WHERE wallet_id = ? FOR UPDATE",
    "key_totals": ("SELECT key_id, SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)),"
                   " ROUND(SUM(COALESCE(cost_usd, 0) + COALESCE(kraken_fee_usd, 0))::numeric"
                   " * 1000000)::bigint FROM requests WHERE key_id = ANY(?::text[]) GROUP BY key_id"),
    "seen_requests": "SELECT request_id FROM requests WHERE request_id = ANY(?::text[])",
    "lock_wallets": ("SELECT wallet_id, balance_micros FROM wallets WHERE wallet_id = ANY(?::text[]) "
                     "ORDER BY wallet_id FOR UPDATE"),
    "insert_debits": (  # run with the wallets locked: its snapshot holds every ref applied
        "INSERT INTO wallet_transactions (wallet_id, kind, amount_micros, ref, ts, "
        "balance_after_micros) SELECT d.w, 'usage_debit', d.a, d.r, ?, w.balance_micros + "
        "SUM(d.a) OVER (PARTITION BY d.w ORDER BY d.o) FROM (SELECT * FROM "
        "unnest(?::text[], ?::int8[], ?::text[]) WITH ORDINALITY AS u (w, a, r, o) WHERE NOT "
        "EXISTS (SELECT 1 FROM wallet_transactions t WHERE t.ref = u.r)) AS d "
        "JOIN wallets w ON w.wallet_id = d.w ORDER BY d.o "
        "RETURNING wallet_id, balance_after_micros"),
    "add_usage_batch": ("INSERT INTO usage_monthly (customer_id, month, tokens, spend_micros) "
                        "SELECT * FROM unnest(?::text[], ?::text[], ?::int8[], ?::int8[]) "
                        "ON CONFLICT (customer_id, month) DO UPDATE SET "
                        "tokens = usage_monthly.tokens + EXCLUDED.tokens, "
                        "spend_micros = usage_monthly.spend_micros + EXCLUDED.spend_micros"),
    "all_balances": "SELECT wallet_id, balance_micros, last_tx_id FROM wallets",
    "mark_wallet_erased": ("INSERT INTO wallet_erasures (wallet_id, ts) VALUES (?, ?) "
                           "ON CONFLICT (wallet_id) DO NOTHING"),
}

STATEMENTS_PG: dict[str, str] = {name: numbered(sql) for name, sql in {**STATEMENTS, **_PG}.items()}
_SHARE_ERASURE_LOCK = f"SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK})"


class PostgresBillingRepository(BillingRepository):
    """Array parameters and fixed-order row locks for the batch; the rest as SQLite."""

    __slots__ = ()

    async def debit(self, tx: Any, debits: Sequence[tuple[str, int, str]], now: float,
                    ) -> dict[str, int]:
        wallets = sorted({d[0] for d in debits})
        if not wallets:
            return {}
        locked = {r[0] for r in await tx.fetch_all(self.sql["lock_wallets"], (wallets,))}
        todo: dict[str, tuple[str, int, str]] = {}
        for debit in debits:
            if debit[0] in locked:  # no wallet (postpaid): no ledger row
                todo.setdefault(debit[2], debit)
        if not todo:
            return {}
        cols = tuple(map(list, zip(*todo.values())))
        balances: dict[str, int] = {}
        for wallet_id, after in await tx.fetch_all(self.sql["insert_debits"], (now, *cols)):
            # every amount is negative: a wallet's lowest balance_after is its new balance
            balances[wallet_id] = min(after, balances.get(wallet_id, after))
        return balances

    async def _erased(self, tx: Any, customer_id: str) -> bool:
        """As SQLite's, after taking the erasure lock shared (as a batch does): an erasure
        waits for this credit and then erases its rows, or the credit sees the erasure."""
        await tx.execute(_SHARE_ERASURE_LOCK)
        return await super()._erased(tx, customer_id)

    async def balances_since(self, db: Any, last_tx_id: int) -> list[tuple[str, int, int]]:
        """Every wallet, whatever ``last_tx_id``: ids are taken when a row is inserted, not when
        its transaction commits, so a wallet changed by a slower transaction can commit with an
        id below one a refresh has already seen. One row per customer, as the plans read."""
        return [(r[0], int(r[1]), int(r[2]))
                for r in await db.fetch_all(self.sql["all_balances"])]

    async def add_usage(self, tx: Any, rows: Sequence[tuple[str, str, int, int]]) -> None:
        if rows:
            await tx.execute(self.sql["add_usage_batch"], tuple(map(list, zip(*sorted(rows)))))

    async def seen_requests(self, tx: Any, ids: Sequence[str]) -> set[str]:
        inserted = getattr(tx, "inserted", None)
        if inserted is not None:  # the batch's rows are in: stored before = not inserted now
            return {i for i in ids if i not in inserted}
        return {r[0] for r in await tx.fetch_all(self.sql["seen_requests"], (list(ids),))}

    async def key_totals(self, db: Any, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        if not keys:
            return []
        return [(k, int(t or 0), int(s or 0))
                for k, t, s in await db.fetch_all(self.sql["key_totals"], (list(keys),))]


POSTGRES_BILLING = PostgresBillingRepository(STATEMENTS_PG)
"""PostgreSQL's billing repository (``PostgresStore.billing``)."""
