"""Erased customers, so that an erasure stays final whatever was still in flight.

A request admitted before its customer was erased ends after it, in this process or in
another worker; its record may also come back from a crash journal at the next start. Each
batch therefore looks up its customers here, inside the batch's own transaction: a record
of an erased customer is written under a fresh tombstone (no key id unless billing records
are kept) and is not billed, so no row, wallet or ``usage_monthly`` entry holding the id
comes back. SQLite serialises the erasure's and the batch's transactions, so either the
erasure sees the batch's rows or the batch sees the erasure.

The table holds HMAC-SHA256 digests of the ids, never the ids, under a random key made by
the migration and kept in the same database (every process needs it): whoever holds the
file and already knows an id can tell that it was erased, nothing more; no tombstone is
stored beside a digest, so tombstoned rows stay unlinkable.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kraken.store.record import RequestRecord

if TYPE_CHECKING:
    from kraken.store.sqlite import Tx

_IN_CHUNK = 500  # SQLite host parameters per IN (...) list


def tombstone(customer_id: str) -> str:
    """An irreversible stand-in for ``customer_id`` (the HMAC key is never stored)."""
    key = os.urandom(32)
    return "erased_" + hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


def digest(key: bytes, customer_id: str) -> str:
    """What ``erased_customers`` stores for an id."""
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()


async def _key(tx: Tx) -> bytes:
    row = await tx.fetch_one("SELECT key FROM erasure_key WHERE id = 1")
    return bytes(row[0])


async def mark(tx: Tx, customer_id: str, *, keep_billing_records: bool) -> None:
    """Record the erasure of ``customer_id`` (inside the erasure's transaction)."""
    await tx.execute("INSERT OR REPLACE INTO erased_customers (digest, keep_billing) VALUES (?, ?)",
                     (digest(await _key(tx), customer_id), int(keep_billing_records)))


async def scrub(tx: Tx, records: Sequence[RequestRecord], key: bytes | None = None,
                ) -> tuple[Sequence[RequestRecord], Sequence[RequestRecord]]:
    """(records to insert, records to bill): erased customers' records tombstoned, unbilled.

    One indexed lookup per batch; the common case (nobody in the batch erased) returns the
    batch as it is. ``key``: the database's digest key if the caller holds it (read once at
    open: it never changes), else it is read here.
    """
    customers = {rec.customer_id for rec in records if isinstance(rec.customer_id, str)}
    if not customers:
        return records, records
    if key is None:
        key = await _key(tx)
    by_digest = {digest(key, cid): cid for cid in customers}
    erased: dict[str, bool] = {}  # customer id -> keep_billing
    digests = list(by_digest)
    for i in range(0, len(digests), _IN_CHUNK):
        chunk = digests[i:i + _IN_CHUNK]
        rows = await tx.fetch_all(
            "SELECT digest, keep_billing FROM erased_customers WHERE digest IN "
            f"({', '.join('?' * len(chunk))})", chunk)
        erased.update((by_digest[d], bool(keep)) for d, keep in rows)
    return apply(records, erased)


def apply(records: Sequence[RequestRecord], erased: dict[str, bool],
          ) -> tuple[Sequence[RequestRecord], Sequence[RequestRecord]]:
    """(records to insert, records to bill) given the batch's erased customers (id -> keep_billing).

    Shared by both backends; only the lookup that builds ``erased`` is dialect SQL.
    """
    if not erased:
        return records, records
    stand_in = {cid: tombstone(cid) for cid in erased}  # one per batch: its rows stay grouped
    written, billed = [], []
    for rec in records:
        keep = erased.get(rec.customer_id)  # type: ignore[arg-type]
        if keep is None:
            written.append(rec)
            billed.append(rec)
            continue
        written.append(rec.replace(customer_id=stand_in[rec.customer_id],
                                   key_id=rec.key_id if keep else None))
    return written, billed
