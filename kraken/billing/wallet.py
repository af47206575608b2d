"""Prepaid wallets: integer micro-dollar balances changed only by immutable transactions.

The schema (migration 5) enforces the ledger: a wallet's balance moves only through the
AFTER INSERT trigger of ``wallet_transactions``, each row carries the balance after it, rows
are never updated, and only ``usage_debit`` rows may take a balance below zero (the service
was already delivered; the hot path then refuses the customer's next request with 402). Every
transaction has a unique ``ref`` (the request id for a usage debit, the Stripe payment for a
webhook top-up, the caller's idempotency key for an admin top-up), so replays never apply twice.

A wallet belongs to a customer (``wallet_id`` = customer id). Its rows hold ids and amounts,
never names or emails, and are kept for billing; ``erase_wallet`` removes them only when the
operator does not keep billing records. The statements are the store's billing repository
(``store.billing`` / ``tx.billing``, kraken/store/billing_sql.py), one per backend.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from kraken.store.interface import Store, Tx
from kraken.store.record import RequestRecord

__all__ = [
    "CustomerErased",
    "KINDS",
    "MICROS_PER_USD",
    "Overdraft",
    "RefConflict",
    "Transaction",
    "WalletError",
    "apply",
    "balance",
    "batch_costs",
    "balances_since",
    "debit_usage",
    "erase_wallet",
    "micros_to_usd",
    "top_up",
    "transactions",
    "usage_micros",
    "usd_to_micros",
]

MICROS_PER_USD = 1_000_000
KINDS = ("top_up", "usage_debit", "refund", "adjustment")
MAX_AMOUNT_MICROS = 10**15
"""One billion dollars: larger amounts are a typo, not a payment."""
_MICRO = Decimal("1e-6")


class WalletError(ValueError):
    """A refused wallet operation; the message names the field."""


class Overdraft(WalletError):
    """A debit other than usage would take the balance below zero (a refused wallet operation;
    a request refused for a low balance is ``billing.guard.InsufficientBalance``)."""


class RefConflict(WalletError):
    """The ref is already used by a different transaction."""


class CustomerErased(WalletError):
    """The wallet's customer was erased: nothing is credited or created under its id."""


@dataclass(frozen=True, slots=True)
class Transaction:
    id: int
    wallet_id: str
    kind: str
    amount_micros: int
    ref: str
    ts: float
    balance_after_micros: int

    def to_dict(self) -> dict:
        return {"id": self.id, "wallet_id": self.wallet_id, "kind": self.kind,
                "amount_micros": self.amount_micros, "amount_usd": micros_to_usd(self.amount_micros),
                "ref": self.ref, "ts": self.ts, "balance_after_micros": self.balance_after_micros}


def usd_to_micros(amount: str | float | Decimal, *, field: str = "amount_usd") -> int:
    """Exact conversion of a USD amount to micro-dollars; more than 6 decimals is refused."""
    if isinstance(amount, bool):
        raise WalletError(f"{field} must be a number of USD")
    try:
        value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(str(amount).strip())
    except InvalidOperation:
        raise WalletError(f"{field} must be a number of USD, not {str(amount)[:40]!r}") from None
    if not value.is_finite():
        raise WalletError(f"{field} must be finite")
    micros = value / _MICRO
    if micros != micros.to_integral_value():
        raise WalletError(f"{field} has more than 6 decimal places (the unit is one micro-dollar)")
    return int(micros)


def micros_to_usd(micros: int) -> str:
    """A micro-dollar amount as an exact decimal string (for JSON and the CLI)."""
    return str((Decimal(micros) * _MICRO).quantize(_MICRO))


_FLOAT_EXACT_USD = 1e3
"""|cost| and |fee| below this many USD: their float sum in micro-dollars is within 1e-6 of
the exact decimal sum (three roundings of at most 2**-53 relative, on at most 2e9 micros)."""


def usage_micros(rec: RequestRecord) -> int:
    """What a request costs the customer (provider cost + Kraken fee), rounded half-even to µ$.

    Exact: the decimal values of the two floats (their ``repr``) summed and rounded. Float
    arithmetic gives the same integer unless the sum lies within 1e-6 of a half micro-dollar
    (or a value is large, not finite or not a float): only those take the Decimal path
    (~0.3 µs instead of ~2 µs; the hot path and the writer both call this per record).
    """
    cost, fee = rec.cost_usd, rec.kraken_fee_usd
    if cost is None and fee is None:  # an unpriced record: the usual one without a price
        return 0
    if (cost is None or (type(cost) is float and -_FLOAT_EXACT_USD < cost < _FLOAT_EXACT_USD)) \
            and (fee is None or (type(fee) is float and -_FLOAT_EXACT_USD < fee < _FLOAT_EXACT_USD)):
        m = ((cost or 0.0) + (fee or 0.0)) * 1e6
        r = round(m)
        if abs(m - r) < 0.499999:
            return r
    return _usage_micros_exact(rec)


def _usage_micros_exact(rec: RequestRecord) -> int:
    total = Decimal(0)
    for value in (rec.cost_usd, rec.kraken_fee_usd):
        if value:
            total += Decimal(repr(value))
    return int((total / _MICRO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def batch_costs(records: Sequence[RequestRecord]) -> tuple[list[int], dict[str, int]]:
    """``usage_micros`` of each record of a batch, computed once:
    in record order, and by request id (the first record of an id, as ``new_records`` keeps)."""
    micros = [usage_micros(rec) for rec in records]
    by_id: dict[str, int] = {}
    for rec, m in zip(records, micros):
        by_id.setdefault(rec.request_id, m)
    return micros, by_id


def _check(wallet_id: str, kind: str, amount_micros: int, ref: str) -> None:
    if not isinstance(wallet_id, str) or not wallet_id or len(wallet_id) > 128:
        raise WalletError("customer_id must be a non-empty string of at most 128 characters")
    if kind not in KINDS:
        raise WalletError(f"kind must be one of {', '.join(KINDS)}")
    if isinstance(amount_micros, bool) or not isinstance(amount_micros, int) or amount_micros == 0:
        raise WalletError("amount must be a non-zero whole number of micro-dollars")
    if abs(amount_micros) > MAX_AMOUNT_MICROS:
        raise WalletError("amount is larger than 1,000,000,000 USD")
    if kind == "top_up" and amount_micros < 0:
        raise WalletError("a top-up amount must be positive")
    if kind == "usage_debit" and amount_micros > 0:
        raise WalletError("a usage debit amount must be negative")
    if not isinstance(ref, str) or not ref or len(ref) > 255:
        raise WalletError("ref must be a non-empty string of at most 255 characters")


async def apply_in(tx: Tx, wallet_id: str, kind: str, amount_micros: int, ref: str,
                   *, now: float | None = None) -> tuple[Transaction, bool]:
    """Apply one transaction inside an open transaction; (row, False) if ``ref`` was applied.

    Raises RefConflict when ``ref`` names a different transaction, Overdraft when a
    non-usage debit would overdraw. The wallet is locked before ``ref`` is looked up: the same
    ref applied at once elsewhere (a payment's two Stripe events on two hosts) then waits for
    that transaction and finds its row, where looking first let both miss it and one fail on
    the ledger's unique ref.
    """
    _check(wallet_id, kind, amount_micros, ref)
    now = time.time() if now is None else now
    current = await tx.billing.wallet_for_change(tx, wallet_id, now)
    if current is None:  # e.g. a payment completed after the erasure: refund it at Stripe
        raise CustomerErased("customer_id names an erased customer; nothing was credited "
                             "(refund the payment)")
    row = await tx.billing.transaction_by_ref(tx, ref)
    if row is not None:
        existing = Transaction(*row)
        if (existing.wallet_id, existing.kind, existing.amount_micros) != (wallet_id, kind, amount_micros):
            raise RefConflict("ref is already used by a different wallet transaction")
        return existing, False
    after = current + amount_micros
    if kind != "usage_debit" and amount_micros < 0 and after < 0:
        raise Overdraft(
            f"insufficient balance: {micros_to_usd(current)} USD available, "
            f"{micros_to_usd(-amount_micros)} USD requested")
    await tx.billing.insert_transaction(tx, (wallet_id, kind, amount_micros, ref, now, after))
    row = await tx.billing.transaction_by_ref(tx, ref)
    assert row is not None
    return Transaction(*row), True


async def apply(store: Store, wallet_id: str, kind: str, amount_micros: int, ref: str,
                ) -> tuple[Transaction, bool]:
    """``apply_in`` in its own transaction."""
    async with store.transaction() as tx:
        return await apply_in(tx, wallet_id, kind, amount_micros, ref)


async def top_up(store: Store, customer_id: str, amount_micros: int, ref: str,
                 ) -> tuple[Transaction, bool]:
    """Credit a customer's wallet (admin API, CLI, Stripe). Idempotent by ``ref``.

    Returns the transaction and whether it was new; a repeated ``ref`` with the same
    customer and amount returns the first transaction, a different one raises RefConflict.
    """
    return await apply(store, customer_id, "top_up", amount_micros, ref)


async def balance(store: Store, wallet_id: str) -> int:
    """The balance in micro-dollars (0 for a wallet that does not exist yet)."""
    found = await store.billing.balance(store, wallet_id)
    return 0 if found is None else found


async def transactions(store: Store, wallet_id: str, *, limit: int = 100,
                       before_id: int | None = None) -> list[Transaction]:
    """Newest first, ``limit`` at most, optionally only those older than ``before_id``."""
    limit = max(1, min(int(limit), 1000))
    rows = await store.billing.transactions(
        store, wallet_id, limit, None if before_id is None else int(before_id))
    return [Transaction(*r) for r in rows]


async def new_records(tx: Tx, records: Sequence[RequestRecord]) -> list[RequestRecord]:
    """The records of a batch not yet in ``requests`` (run before the batch's INSERT OR IGNORE)."""
    seen = await tx.billing.seen_requests(tx, [r.request_id for r in records])
    out, taken = [], set()
    for rec in records:
        if rec.request_id not in seen and rec.request_id not in taken:
            taken.add(rec.request_id)
            out.append(rec)
    return out


async def debit_usage(tx: Tx, records: Iterable[RequestRecord], *, now: float | None = None,
                      costs: Mapping[str, int] | None = None) -> dict[str, int]:
    """Debit each record's cost + fee from its customer's wallet, inside the batch transaction.

    Only a wallet that exists is debited: one is made by the first credit (top-up, refund,
    adjustment), so every prepaid customer admitted has one; a postpaid customer never credited
    gets no ledger row per request (its spend is in ``usage_monthly`` and ``requests``).
    Idempotent by request id (the ref): a record already debited is skipped. Returns the new
    balance of every wallet touched, for the hot path's snapshot. ``costs`` (request id ->
    ``usage_micros``, see ``batch_costs``) spares computing them again.
    """
    now = time.time() if now is None else now
    debits = [(rec.customer_id, -m, rec.request_id) for rec in records
              if rec.customer_id and (m := usage_micros(rec) if costs is None
                                      else costs[rec.request_id]) > 0]
    if not debits:
        return {}
    return await tx.billing.debit(tx, debits, now)


async def balances_since(store: Store, last_tx_id: int) -> tuple[dict[str, int], int]:
    """Wallets changed after transaction ``last_tx_id``: ({wallet: balance}, newest tx id)."""
    rows = await store.billing.balances_since(store, last_tx_id)
    newest = max((r[2] for r in rows), default=last_tx_id)
    return {r[0]: r[1] for r in rows}, newest


async def erase_wallet(tx: Tx, wallet_id: str, *, now: float | None = None) -> int:
    """Delete a wallet and its transactions for account erasure; returns rows deleted.

    Call only when billing records are not kept (``[retention] keep_billing_records = false``);
    the tombstone in ``wallet_erasures`` is what lets the schema's triggers allow the delete.
    """
    return await tx.billing.erase_wallet(tx, wallet_id, time.time() if now is None else now)
