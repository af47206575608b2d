"""The one store interface both backends implement: SQLite (embedded) and PostgreSQL (many hosts).

The meter's batch writer depends only on this. Open is backend-specific in its options
(``SqliteStore.open(path, busy_timeout_ms=...)``, ``PostgresStore.open(dsn, pool_size=...)``)
but both take the target first. Errors are ``kraken.store.errors`` types whatever the backend.

Each concern's SQL is a repository beside the store, one version per backend, reached as an
attribute of the store (reads) and of its transactions (writes inside the caller's transaction):
``store.accounts`` / ``tx.accounts`` (kraken/store/accounts_sql.py), ``store.audit`` /
``tx.audit`` (audit_repo.py), ``store.privacy`` / ``tx.privacy`` (privacy_sql.py),
``store.billing`` / ``tx.billing`` (billing_sql.py), ``store.reports`` (reports_sql.py),
``store.owners`` (owners_sql.py: who created each file and batch), ``store.signup``,
``store.email_changes`` and ``store.invitations`` (pending links and invitations). ``Tx``
also still takes the backend's own SQL (``?`` placeholders in SQLite, ``$1`` in PostgreSQL).
"""
from __future__ import annotations

from typing import Any, AsyncContextManager, Awaitable, Callable, Protocol, Sequence, runtime_checkable

from kraken.store.record import RequestRecord


@runtime_checkable
class Tx(Protocol):
    """The statements of one open transaction."""

    accounts: Any
    """Customers, organisations, members, keys, BYOK rows (kraken/store/accounts_sql.py)."""
    audit: Any
    """The hash-chained audit log (kraken/store/audit_repo.py)."""
    privacy: Any
    """GDPR export, erasure and the retention purge (kraken/store/privacy_sql.py)."""
    signup: Any
    """Pending sign-up links (kraken/store/signup_sql.py)."""
    email_changes: Any
    """Pending email changes, applied by their link (kraken/store/email_changes_sql.py)."""
    invitations: Any
    """Organisations' pending invitations (kraken/store/invitations_sql.py)."""
    billing: Any
    """Wallets, their ledger, monthly usage, per-key totals (kraken/store/billing_sql.py)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one parameterised statement; return the number of rows changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int | None:
        """Run one statement per row; rows changed, or None where the driver does not say."""
        ...

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None: ...


BatchWork = Callable[[Any, Sequence[RequestRecord]], Awaitable[None]]
"""Work run inside a batch's transaction before its rows (wallet debits): ``(tx, records)``."""


@runtime_checkable
class Store(Protocol):
    """Request records in batches, plus transactions and reads for everything else."""

    accounts: Any
    audit: Any
    privacy: Any
    signup: Any
    email_changes: Any
    invitations: Any
    billing: Any
    reports: Any
    """Usage statistics over ``requests`` for the admin API and page (reports_sql.py)."""
    owners: Any
    """Who created each file and batch (owners_sql.py); its methods take a store or a tx."""

    @classmethod
    async def open(cls, target: str) -> "Store":
        """Connect, apply pending migrations, return a ready store."""
        ...

    async def close(self) -> None: ...

    async def insert_records(self, records: Sequence[RequestRecord],
                             hook: BatchWork | None = None) -> int:
        """Insert a batch in one transaction, idempotent by request_id; return how many were new.

        ``hook`` runs first in the same transaction, so both commit or neither does. A
        StoreError other than StoreDataError means: nothing written, keep the batch, retry.
        """
        ...

    async def writable(self, *, timeout_ms: int = 100) -> bool:
        """True if a write could start within ``timeout_ms`` (/readyz)."""
        ...

    async def checkpoint(self) -> None:
        """Housekeeping at shutdown or when idle (a no-op where the server does it)."""
        ...

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one read query outside any transaction."""
        ...

    def transaction(self) -> AsyncContextManager[Tx]:
        """One transaction: commits on normal exit, rolls back on any exception."""
        ...


__all__ = ["BatchWork", "Store", "Tx"]
