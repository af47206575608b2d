"""The billing repository: wallets, their ledger, monthly usage and per-key totals.

kraken/billing holds the rules (amounts, kinds, what a batch debits, the refusals); this holds the
statements, so no SQL lives outside store/. ``BillingRepository`` is SQLite's (one writer: the
batch's statements run under its write lock, its lookups take their ids as one JSON array, other
``IN (...)`` lists at most 500 host parameters);
``kraken.store.postgres.billing`` overrides the batch methods with array parameters and row locks
taken in a fixed order, for several hosts writing at once.

Reached as ``store.billing`` (reads) and ``tx.billing`` (inside the caller's transaction); methods
take what they run on (``db``) first, as the accounts repository does. Ledger rows come back as
tuples in ``TX_COLUMNS`` order.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

TX_COLUMNS = "id, wallet_id, kind, amount_micros, ref, ts, balance_after_micros"
_INSERT_TX = ("INSERT INTO wallet_transactions (wallet_id, kind, amount_micros, ref, ts, "
              "balance_after_micros) VALUES (?, ?, ?, ?, ?, ?)")

STATEMENTS: dict[str, str] = {
    "tx_by_ref": f"SELECT {TX_COLUMNS} FROM wallet_transactions WHERE ref = ?",
    "ensure_wallet": "INSERT OR IGNORE INTO wallets (wallet_id, created_ts) VALUES (?, ?)",
    "wallet_for_change": "SELECT balance_micros FROM wallets WHERE wallet_id = ?",
    "insert_tx": _INSERT_TX,
    "balance": "SELECT balance_micros FROM wallets WHERE wallet_id = ?",
    "transactions": (f"SELECT {TX_COLUMNS} FROM wallet_transactions WHERE wallet_id = ? "
                     "ORDER BY id DESC LIMIT ?"),
    "transactions_before": (f"SELECT {TX_COLUMNS} FROM wallet_transactions WHERE wallet_id = ? "
                            "AND id < ? ORDER BY id DESC LIMIT ?"),
    "balances_since": ("SELECT wallet_id, balance_micros, last_tx_id FROM wallets "
                       "WHERE last_tx_id > ?"),
    "usage_of_month": "SELECT customer_id, tokens, spend_micros FROM usage_monthly WHERE month = ?",
    "customer_plans": "SELECT id, plan FROM customers",
    "budgeted_keys": ("SELECT id FROM api_keys WHERE (token_budget IS NOT NULL OR "
                      "spend_budget_usd IS NOT NULL) AND revoked_at IS NULL "
                      "ORDER BY created_at DESC LIMIT ?"),
    "key_totals": ("SELECT key_id, SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)),"
                   " CAST(ROUND(SUM(COALESCE(cost_usd, 0) + COALESCE(kraken_fee_usd, 0)) * 1000000)"
                   " AS INTEGER) FROM requests WHERE key_id IN ({marks}) GROUP BY key_id"),
    # The batch hook's lookups take their ids as one JSON array (SQLite's json_each): one
    # statement whatever the batch's size, where IN (?, ...) lists took one per 500 ids - each a
    # hop to the driver's thread behind a busy event loop - and were compiled once per list
    # length, filling the connection's statement cache with large variants.
    "seen_requests": ("SELECT request_id FROM requests "
                      "WHERE request_id IN (SELECT value FROM json_each(?))"),
    "seen_refs": "SELECT ref FROM wallet_transactions WHERE ref IN (SELECT value FROM json_each(?))",
    "wallets_of": ("SELECT wallet_id, balance_micros FROM wallets "
                   "WHERE wallet_id IN (SELECT value FROM json_each(?))"),
    "add_usage": ("INSERT INTO usage_monthly (customer_id, month, tokens, spend_micros) "
                  "VALUES (?, ?, ?, ?) ON CONFLICT (customer_id, month) DO UPDATE SET "
                  "tokens = tokens + excluded.tokens, "
                  "spend_micros = spend_micros + excluded.spend_micros"),
    "mark_wallet_erased": "INSERT OR IGNORE INTO wallet_erasures (wallet_id, ts) VALUES (?, ?)",
    "delete_wallet_transactions": "DELETE FROM wallet_transactions WHERE wallet_id = ?",
    "delete_wallet": "DELETE FROM wallets WHERE wallet_id = ?",
}
"""SQLite's statements (``?`` placeholders; ``{marks}`` is a list of them), as they were in
kraken/billing."""

CHUNK = 500
"""SQLite host parameters per ``IN (...)`` list."""


def _json_list(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _chunks(items: Sequence[str], n: int = CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class BillingRepository:
    """SQLite's billing statements; the PostgreSQL subclass changes the batch methods."""

    __slots__ = ("sql",)

    def __init__(self, statements: Mapping[str, str] = STATEMENTS) -> None:
        self.sql = statements

    # -- one wallet (admin API, CLI, Stripe) ---------------------------------------------

    async def transaction_by_ref(self, db: Any, ref: str) -> tuple | None:
        rows = await db.fetch_all(self.sql["tx_by_ref"], (ref,))
        return tuple(rows[0]) if rows else None

    async def wallet_for_change(self, tx: Any, wallet_id: str, now: float) -> int | None:
        """Create the wallet if needed and return its balance, held until the transaction ends
        (SQLite: the write lock; PostgreSQL: the row, FOR UPDATE). None, creating nothing, if
        the wallet's customer was erased: a credit arriving afterwards (a payment completed
        later) must not bring the id back (kraken/store/erased.py)."""
        if await self._erased(tx, wallet_id):
            return None
        await tx.execute(self.sql["ensure_wallet"], (wallet_id, now))
        row = await tx.fetch_one(self.sql["wallet_for_change"], (wallet_id,))
        assert row is not None
        return int(row[0])

    async def _erased(self, tx: Any, customer_id: str) -> bool:
        """Is ``customer_id`` in erased_customers (as its keyed digest)? SQLite's single writer
        already orders this transaction and any erasure."""
        return await tx.privacy.is_erased(tx, customer_id)

    async def insert_transaction(self, tx: Any, row: Sequence[Any]) -> None:
        """``row``: (wallet_id, kind, amount_micros, ref, ts, balance_after_micros)."""
        await tx.execute(self.sql["insert_tx"], tuple(row))

    async def balance(self, db: Any, wallet_id: str) -> int | None:
        rows = await db.fetch_all(self.sql["balance"], (wallet_id,))
        return int(rows[0][0]) if rows else None

    async def transactions(self, db: Any, wallet_id: str, limit: int,
                           before_id: int | None) -> list[tuple]:
        if before_id is None:
            return await db.fetch_all(self.sql["transactions"], (wallet_id, limit))
        return await db.fetch_all(self.sql["transactions_before"], (wallet_id, before_id, limit))

    async def erase_wallet(self, tx: Any, wallet_id: str, now: float) -> int:
        """Tombstone, then delete the ledger and the wallet (the tombstone lets the triggers)."""
        await tx.execute(self.sql["mark_wallet_erased"], (wallet_id, now))
        deleted = await tx.execute(self.sql["delete_wallet_transactions"], (wallet_id,))
        return deleted + await tx.execute(self.sql["delete_wallet"], (wallet_id,))

    # -- the meter's batch hook (inside the batch's transaction) --------------------------

    async def seen_requests(self, tx: Any, ids: Sequence[str]) -> set[str]:
        """The ids of ``ids`` already in ``requests``."""
        return await self._in(tx, "seen_requests", ids)

    async def debit(self, tx: Any, debits: Sequence[tuple[str, int, str]], now: float,
                    ) -> dict[str, int]:
        """Insert one usage_debit per (wallet, negative amount, ref) whose wallet exists and whose
        ref is not applied yet; return the balance of each of those wallets after the batch.

        A customer without a wallet (never credited: postpaid) gets no ledger row; its spend is in
        ``usage_monthly`` and ``requests``."""
        balances = await self._wallets(tx, list(dict.fromkeys(d[0] for d in debits)))
        debits = [d for d in debits if d[0] in balances]
        done = await self._in(tx, "seen_refs", [d[2] for d in debits])
        rows = []
        for wallet_id, amount, ref in debits:
            if ref not in done:
                done.add(ref)
                balances[wallet_id] += amount
                rows.append((wallet_id, "usage_debit", amount, ref, now, balances[wallet_id]))
        if rows:  # one multi-row INSERT: the ledger's triggers still run row after row
            await tx.insert_rows(self.sql["insert_tx"], rows)
        return balances

    async def add_usage(self, tx: Any, rows: Sequence[tuple[str, str, int, int]]) -> None:
        """Add (customer, month, tokens, spend micros) to ``usage_monthly``."""
        await tx.executemany(self.sql["add_usage"], rows)

    async def _wallets(self, tx: Any, wallet_ids: list[str]) -> dict[str, int]:
        """The balances of those of ``wallet_ids`` that exist."""
        if not wallet_ids:
            return {}
        rows = await tx.fetch_all(self.sql["wallets_of"], (_json_list(wallet_ids),))
        return {r[0]: int(r[1]) for r in rows}

    async def _in(self, db: Any, name: str, values: Sequence[str]) -> set[str]:
        """Those of ``values`` the statement ``name`` (ids as a JSON array) finds."""
        if not values:
            return set()
        return {r[0] for r in await db.fetch_all(self.sql[name], (_json_list(values),))}

    def _marks(self, name: str, n: int) -> str:
        return self.sql[name].format(marks=", ".join("?" * n))

    # -- the guard's refresh (reads) -------------------------------------------------------

    async def balances_since(self, db: Any, last_tx_id: int) -> list[tuple[str, int, int]]:
        """(wallet, balance, last tx id) of the wallets changed after ``last_tx_id``."""
        return [(r[0], int(r[1]), int(r[2]))
                for r in await db.fetch_all(self.sql["balances_since"], (last_tx_id,))]

    async def usage_of_month(self, db: Any, month: str) -> list[tuple[str, int, int]]:
        """(customer, tokens, spend micros) for the month 'YYYY-MM'."""
        return [(r[0], int(r[1]), int(r[2]))
                for r in await db.fetch_all(self.sql["usage_of_month"], (month,))]

    async def customer_plans(self, db: Any) -> list[tuple[str, str | None]]:
        return [(r[0], r[1]) for r in await db.fetch_all(self.sql["customer_plans"])]

    async def budgeted_keys(self, db: Any, limit: int) -> list[str]:
        """Unrevoked keys with a budget, newest first, at most ``limit``."""
        return [r[0] for r in await db.fetch_all(self.sql["budgeted_keys"], (limit,))]

    async def key_totals(self, db: Any, keys: Sequence[str]) -> list[tuple[str, int, int]]:
        """(key, lifetime tokens, lifetime spend micros) of those of ``keys`` with requests."""
        out = []
        for chunk in _chunks(keys):
            for key_id, tokens, spend in await db.fetch_all(
                    self._marks("key_totals", len(chunk)), chunk):
                out.append((key_id, int(tokens or 0), int(spend or 0)))
        return out


SQLITE_BILLING = BillingRepository()
"""SQLite's billing repository (``SqliteStore.billing``)."""
