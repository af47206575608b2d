"""Right to erasure: the account, its keys, BYOK ciphertexts, memberships, invitations (to and
from it), pending email changes and request metadata go in one transaction; then the backend
pushes the erased bytes out of its files.

With ``secure_delete`` on (SqliteStore sets it) SQLite zeroes freed cells and pages, and the
TRUNCATE checkpoint moves the last page images out of the WAL and empties it, so afterwards
neither the email nor the customer id is in ``kraken.db``, ``-wal`` or ``-shm``
(tests/privacy/test_gdpr_erase.py greps the raw files). On PostgreSQL the rows are gone from
every query and dump at commit (tests/privacy/test_privacy_backends.py greps a ``pg_dump``), but
their bytes stay in the server's files for a while (``store.privacy.leftovers``; measured in
kraken/store/postgres/privacy.py's docstring).

``keep_billing_records`` keeps the request rows for billing audit but replaces the customer
id with a tombstone: an HMAC-SHA256 of the id under a random key that is discarded at once,
so the rows stay grouped together yet can never be linked back to the customer.

Erasure is final whatever is still in flight: the same transaction first marks the customer in
``erased_customers`` (a keyed digest, kraken/store/erased.py), and every batch of records,
in any process or host and at journal replay, tombstones an erased customer's records as it
writes them and bills none of them. The statements are the store's (``tx.privacy``,
kraken/store/privacy_sql.py); this module decides what goes and in which order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from kraken import audit
from kraken.accounts import invitations, service
from kraken.privacy.tables import customer_tables
from kraken.store.erased import tombstone
from kraken.store.interface import Store, Tx

BILLING_TABLES = frozenset({"usage_monthly"})
"""Tables keyed by customer_id that are billing records: tombstoned, not deleted, when the
operator keeps billing records. (Wallet ledgers are immutable by design and are kept as
they are in that mode; without it they are erased.)"""


@dataclass
class Erasure:
    """What an erasure removed (counts only: nothing about the person)."""

    requests_deleted: int = 0
    requests_tombstoned: int = 0
    rows_deleted: dict[str, int] = field(default_factory=dict)
    rows_tombstoned: dict[str, int] = field(default_factory=dict)
    audit_entries_redacted: int = 0
    wal_truncated: bool | None = False
    """SQLite: whether the WAL was emptied after the erasure (False: a reader held it, the bytes
    stay in -wal until the next checkpoint). None on PostgreSQL, which has no such step."""
    tombstone: str | None = None

    def to_dict(self) -> dict:
        return {"erased": True, "requests_deleted": self.requests_deleted,
                "requests_tombstoned": self.requests_tombstoned,
                "rows_deleted": self.rows_deleted, "rows_tombstoned": self.rows_tombstoned,
                "tombstone": self.tombstone,
                "audit_entries_redacted": self.audit_entries_redacted,
                "wal_truncated": self.wal_truncated}


async def erase_customer(store: Store, customer_id: str, *, actor: str,
                         keep_billing_records: bool = False) -> Erasure:
    """Erase everything about ``customer_id`` (NotFoundError if there is no such customer)."""
    result = Erasure(tombstone=tombstone(customer_id) if keep_billing_records else None)
    tables = await customer_tables(store)
    async with store.transaction() as tx:
        customer = await tx.accounts.customer(tx, customer_id)
        if customer is None:
            raise service.NotFoundError("customer_id", "no such customer")
        actors = await audit.customer_actors(tx, customer_id)  # before its keys go
        # First: from this commit on, every batch of any process (any host) tombstones its
        # records; on PostgreSQL this waits for batches in flight, which then are deleted below.
        await tx.privacy.mark_erased(tx, customer_id, keep_billing_records=keep_billing_records)
        # Invitations both ways: those to the customer (found by customer_id below too) and
        # those it sent as an organisation's admin (invited_by: no walk finds them).
        n = await invitations.delete_involving_in(tx, customer_id)
        if n:
            result.rows_deleted["org_invitations"] = n
        await _own_rows(tx, customer_id, [t for t, _, _ in tables], result)
        await service.delete_customer_in(tx, customer_id)
        result.rows_deleted["customers"] = 1
        # Links asked for the address and not used up (a second one, or expired ones no
        # sign-up has purged yet) hold the email without a customer_id column to find it by.
        n = await tx.privacy.delete_signup_links(tx, customer[1])
        if n:
            result.rows_deleted["signup_links"] = n
        await _requests(tx, customer_id, result)
        if not keep_billing_records:
            n = await _erase_wallet(tx, customer_id)
            if n:
                result.rows_deleted["wallets"] = n
        # The entry commits to the id (and its actor, maybe the customer's own key) through
        # salted digests, then the plaintexts are blanked with every other entry about it.
        await audit.append(tx, actor=actor, action="customer.erase", target=customer_id,
                           subject=customer_id, detail={
                               "requests_deleted": result.requests_deleted,
                               "requests_tombstoned": result.requests_tombstoned,
                               "tables": sorted(result.rows_deleted)})
        result.audit_entries_redacted = await audit.redact_subject(tx, customer_id, actors)
    result.wal_truncated = await store.privacy.after_erasure(store)
    return result


async def _own_rows(tx: Tx, customer_id: str, tables: list[str], result: Erasure) -> None:
    """Own rows first (BYOK ciphertexts, usage...): a table without ON DELETE CASCADE would
    otherwise block the customer's delete, or outlive it. Last created, first erased."""
    for table in reversed(tables):
        if table == "members":  # delete_customer_in needs them to drop emptied orgs
            n = await tx.privacy.count_members(tx, customer_id)
            if n:
                result.rows_deleted[table] = n
            continue
        if result.tombstone and table in BILLING_TABLES:
            n = await tx.privacy.tombstone_rows(tx, table, result.tombstone, customer_id)
            if n:
                result.rows_tombstoned[table] = n
            continue
        n = await tx.privacy.delete_rows(tx, table, customer_id)
        if n:
            result.rows_deleted[table] = n


async def _requests(tx: Tx, customer_id: str, result: Erasure) -> None:
    if result.tombstone:
        result.requests_tombstoned = await tx.privacy.tombstone_requests(
            tx, result.tombstone, customer_id)
    else:
        result.requests_deleted = await tx.privacy.delete_requests(tx, customer_id)


async def _erase_wallet(tx: Tx, customer_id: str) -> int:
    """The prepaid wallet (kraken/billing/wallet.py), keyed by the customer id, with its
    transactions; the erasure marker its triggers need goes too, so the id is left nowhere."""
    return await tx.privacy.erase_wallet(tx, customer_id, time.time())


async def sweep_requests(store: Store, customer_id: str, *,
                         tombstone_id: str | None = None) -> int:
    """Records of an erased customer that were still queued in the meter when it was erased
    (and the wallet their debits may have re-created)."""
    result = Erasure(tombstone=tombstone_id)
    async with store.transaction() as tx:
        await _requests(tx, customer_id, result)
        if not tombstone_id:
            await _erase_wallet(tx, customer_id)
    n = result.requests_deleted + result.requests_tombstoned
    if n:
        await store.privacy.after_erasure(store)
    return n
