"""Erased customers in PostgreSQL: the same digests and tombstones as kraken/store/erased.py.

SQLite serialises an erasure and a batch through its single writer. Here every batch holds
``ERASURE_LOCK`` shared for its transaction and ``mark`` takes it exclusive, so an erasure waits
for batches in flight to commit (then deletes their rows) and later batches, on any host, read
the mark in a statement that starts after the erasure committed.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from kraken.store.erased import apply, digest
from kraken.store.postgres.schema import ERASURE_LOCK
from kraken.store.record import RequestRecord

if TYPE_CHECKING:
    from kraken.store.postgres.store import PgTx


async def mark(tx: PgTx, customer_id: str, *, keep_billing_records: bool) -> None:
    """Record the erasure of ``customer_id``; call first in the erasure's transaction."""
    await tx.execute("SELECT pg_advisory_xact_lock($1)", (ERASURE_LOCK,))
    row = await tx.fetch_one("SELECT key FROM erasure_key WHERE id = 1")
    await tx.execute(
        "INSERT INTO erased_customers (digest, keep_billing) VALUES ($1, $2) "
        "ON CONFLICT (digest) DO UPDATE SET keep_billing = EXCLUDED.keep_billing",
        (digest(bytes(row[0]), customer_id), keep_billing_records))


async def scrub(tx: PgTx, key: bytes, records: Sequence[RequestRecord],
                ) -> tuple[Sequence[RequestRecord], Sequence[RequestRecord]]:
    """(records to insert, records to bill), as kraken.store.erased.scrub; one lookup per batch.

    ``key`` is the database's erasure key, read once at open (it never changes).
    """
    customers = {rec.customer_id for rec in records if isinstance(rec.customer_id, str)}
    if not customers:
        return records, records
    by_digest = {digest(key, cid): cid for cid in customers}
    rows = await tx.fetch_all(
        "SELECT digest, keep_billing FROM erased_customers WHERE digest = ANY($1::text[])",
        (list(by_digest),))
    return apply(records, {by_digest[d]: bool(keep) for d, keep in rows})
