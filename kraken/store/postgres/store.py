"""The shared store: PostgreSQL through a small asyncpg pool, for several Kraken hosts.

A batch of request records goes in as one multi-row statement (``INSERT ... SELECT FROM
unnest($1::float8[], ...) ON CONFLICT (request_id) DO NOTHING RETURNING request_id``): the whole
batch is one message and one round trip whatever its size, with BEGIN and COMMIT around it.
Replays and retries stay idempotent by request_id, as with SQLite's ``INSERT OR IGNORE``.

Any failure surfaces as a kraken.store.errors type; a lost connection also expires the pool's
connections, so the meter's next retry reconnects instead of finding another dead one.
"""
from __future__ import annotations

import contextlib
import typing
from typing import Any, AsyncIterator, Sequence

import anyio
import asyncpg

from kraken.store.errors import StoreError
from kraken.store.interface import BatchWork
from kraken.store.postgres.accounts import POSTGRES_ACCOUNTS
from kraken.store.postgres.billing import POSTGRES_BILLING
from kraken.store.postgres import erased
from kraken.store.postgres.audit import AUDIT
from kraken.store.postgres.errors import FAILURES, from_asyncpg, is_disconnect
from kraken.store.postgres.privacy import POSTGRES_PRIVACY
from kraken.store.postgres.signup import POSTGRES_SIGNUP
from kraken.store.postgres.email_changes import POSTGRES_EMAIL_CHANGES
from kraken.store.postgres.invitations import POSTGRES_INVITATIONS
from kraken.store.postgres.owners import POSTGRES_OWNERS
from kraken.store.postgres.reports import POSTGRES_REPORTS
from kraken.store.postgres.schema import BOOTSTRAP, ERASURE_LOCK, MIGRATION_LOCK, MIGRATIONS, VERSION
from kraken.store.record import FIELD_NAMES, RequestRecord

_ARRAY_TYPE = {"float": "float8", "int": "int8", "str": "text", "bool": "bool"}
_FIELD_TYPES = typing.get_type_hints(RequestRecord)


def _array_type(name: str) -> str:
    hint = _FIELD_TYPES[name]
    base = next(a for a in (typing.get_args(hint) or (hint,)) if a is not type(None))
    return _ARRAY_TYPE[base.__name__] + "[]"


_INSERT = (
    "INSERT INTO requests ({cols}) SELECT {values} FROM unnest({arrays}) AS r ({cols}) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
).format(
    cols=", ".join(FIELD_NAMES),
    # byok None (a record built field by field) means managed access, as in SQLite.
    values=", ".join("COALESCE(byok, false)" if n == "byok" else n for n in FIELD_NAMES),
    arrays=", ".join(f"${i}::{_array_type(n)}" for i, n in enumerate(FIELD_NAMES, 1)),
)
_BEGIN_BATCH = f"BEGIN; SELECT pg_advisory_xact_lock_shared({ERASURE_LOCK})"
MIGRATION_TIMEOUT_S = 24 * 3600.0
"""The client's bound on the migration lock's wait and on each migration: a day, i.e. only a
server that never answers (a service manager's start timeout usually stops the host sooner)."""
"""One simple-query round trip: open the batch's transaction and take the erasure lock shared."""


class PostgresStore:
    """Request metadata, accounts, audit, privacy, billing and reports in PostgreSQL.

    Create with ``await PostgresStore.open(dsn)``; ``close()`` at shutdown.
    """

    audit = AUDIT
    """The audit chain's SQL (kraken/store/postgres/audit.py)."""

    accounts = POSTGRES_ACCOUNTS
    """The accounts SQL (kraken/store/postgres/accounts.py)."""

    privacy = POSTGRES_PRIVACY
    """GDPR export, erasure and retention SQL (kraken/store/postgres/privacy.py)."""

    signup = POSTGRES_SIGNUP
    """Pending sign-up links (kraken/store/postgres/signup.py)."""

    email_changes = POSTGRES_EMAIL_CHANGES
    """Pending email changes (kraken/store/postgres/email_changes.py)."""

    invitations = POSTGRES_INVITATIONS
    """Organisations' pending invitations (kraken/store/postgres/invitations.py)."""

    owners = POSTGRES_OWNERS
    """Who created each file and batch (kraken/store/postgres/owners.py)."""

    billing = POSTGRES_BILLING
    """Wallets, ledger, monthly usage, key totals (kraken/store/postgres/billing.py)."""

    reports = POSTGRES_REPORTS
    """Usage statistics (kraken/store/postgres/reports.py)."""

    def __init__(self, pool: asyncpg.Pool, erasure_key: bytes, applied: tuple[int, ...]) -> None:
        self._pool = pool
        self._erasure_key = erasure_key
        self.applied = applied
        """Migrations this open applied (empty if another host had already)."""

    @classmethod
    async def open(cls, dsn: str, *, pool_size: int = 4, statement_timeout_ms: int = 5000,
                   connect_timeout_s: float = 5.0) -> "PostgresStore":
        """Connect a pool, apply pending migrations once across hosts, return a ready store.

        ``statement_timeout_ms`` is set on the server (a slow statement is cancelled: StoreBusy)
        and, with a margin, on the client (a hung server or network: StoreError).
        """
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, timeout=connect_timeout_s,
                command_timeout=statement_timeout_ms / 1000 + connect_timeout_s,
                server_settings={"statement_timeout": str(int(statement_timeout_ms)),
                                 "application_name": "kraken"})
        except FAILURES as exc:
            raise from_asyncpg(exc, "open") from exc
        try:
            async with pool.acquire() as conn:
                applied = await _migrate(conn)
                key = bytes(await conn.fetchval("SELECT key FROM erasure_key WHERE id = 1"))
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await pool.close()
            if isinstance(exc, FAILURES):
                raise from_asyncpg(exc, "open") from exc
            raise
        return cls(pool, key, applied)

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._pool.close()

    async def insert_records(self, records: Sequence[RequestRecord],
                             hook: BatchWork | None = None) -> int:
        """Insert a batch in one transaction; return how many rows were new.

        ``hook`` runs after the insert in the same transaction, with ``tx.inserted`` (the ids
        the insert's RETURNING named): the "already stored" check of the billing hook reads
        it instead of querying the table again (one statement less per batch). Records of customers erased meanwhile are
        tombstoned and not billed (kraken/store/postgres/erased.py).
        """
        if not records:
            return 0
        async with self._connection("insert_records") as conn:
            await conn.execute(_BEGIN_BATCH)
            try:
                tx = PgTx(conn)
                records, billed = await erased.scrub(tx, self._erasure_key, records)
                columns = list(zip(*records))  # a record is its values in FIELD_NAMES order
                tx.inserted = {r[0] for r in await conn.fetch(_INSERT, *columns)}
                if hook is not None:
                    await hook(tx, billed)
                await conn.execute("COMMIT")
                return len(tx.inserted)
            except BaseException:
                await _rollback(conn)
                raise

    async def writable(self, *, timeout_ms: int = 100) -> bool:
        """True if a connection answers within ``timeout_ms`` and the server is not a standby."""
        with anyio.move_on_after(timeout_ms / 1000):
            try:
                async with self._connection("writable") as conn:
                    return bool(await conn.fetchval("SELECT NOT pg_is_in_recovery()"))
            except StoreError:
                return False
        return False

    async def checkpoint(self) -> None:
        """Nothing to do: the server checkpoints its own WAL (kept for the Store interface)."""

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read query (admin API, exports, tests); PostgreSQL placeholders ($1)."""
        async with self._connection("query") as conn:
            return [tuple(r) for r in await conn.fetch(sql, *params)]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator["PgTx"]:
        """One transaction on one pooled connection: commit on exit, roll back on any exception."""
        async with self._connection("transaction") as conn:
            await conn.execute("BEGIN")
            try:
                yield PgTx(conn)
                await conn.execute("COMMIT")
            except BaseException:
                await _rollback(conn)
                raise

    @contextlib.asynccontextmanager
    async def _connection(self, operation: str) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failures inside mapped to StoreError (once, here)."""
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except FAILURES as exc:
            if is_disconnect(exc):
                await self._pool.expire_connections()
            raise from_asyncpg(exc, operation) from exc


async def _rollback(conn: asyncpg.Connection) -> None:
    """Roll back unless the connection is gone (the server then rolled back for us).

    A connection the server dropped may already be back in the pool (asyncpg releases it on
    connection loss), so even asking it may raise: then there is nothing left to undo.
    """
    with anyio.CancelScope(shield=True):
        try:
            if not conn.is_closed():
                await conn.execute("ROLLBACK")
        except FAILURES:
            with contextlib.suppress(*FAILURES):
                conn.terminate()  # unusable: the pool replaces a terminated connection


async def _migrate(conn: asyncpg.Connection) -> tuple[int, ...]:
    """Apply pending migrations in one transaction under an advisory lock; return those applied.

    The version is read after the lock is held, so hosts starting at once wait for the first
    one and then find nothing left to do.
    """
    applied: list[int] = []
    async with conn.transaction():
        # Neither the statement timeout (the hot path's bound) nor the client's may cut the wait
        # for another host's migrations or a long one of ours (an index over a large table).
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK,
                           timeout=MIGRATION_TIMEOUT_S)
        await conn.execute(BOOTSTRAP)
        current = await conn.fetchval("SELECT version FROM kraken_schema WHERE id = 1") or 0
        if current > VERSION:
            raise StoreError(f"open: schema version {current} is newer than this Kraken ({VERSION})")
        for version in range(current + 1, VERSION + 1):
            await conn.execute(MIGRATIONS[version - 1], timeout=MIGRATION_TIMEOUT_S)
            applied.append(version)
        if applied:
            await conn.execute(
                "INSERT INTO kraken_schema (id, version) VALUES (1, $1) "
                "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version", VERSION)
    return tuple(applied)


class PgTx:
    """The statements of one open transaction (see ``PostgresStore.transaction``)."""

    __slots__ = ("_conn", "inserted", "timeout")
    audit = AUDIT
    """The audit chain's SQL, for appends inside an action's transaction."""

    accounts = POSTGRES_ACCOUNTS
    """The accounts SQL (kraken/store/postgres/accounts.py)."""

    privacy = POSTGRES_PRIVACY
    """GDPR export, erasure and retention SQL (kraken/store/postgres/privacy.py)."""

    signup = POSTGRES_SIGNUP
    """Pending sign-up links (kraken/store/postgres/signup.py)."""

    email_changes = POSTGRES_EMAIL_CHANGES
    """Pending email changes (kraken/store/postgres/email_changes.py)."""

    invitations = POSTGRES_INVITATIONS
    """Organisations' pending invitations (kraken/store/postgres/invitations.py)."""

    billing = POSTGRES_BILLING
    """Wallet debits and monthly usage inside the batch (kraken/store/postgres/billing.py)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.inserted: set[str] | None = None
        """In a batch: the request ids its insert stored (None elsewhere)."""
        self.timeout: float | None = None
        """The client's bound on each statement; None: the pool's (statement timeout + margin).
        Raised by work whose statements may rightly take long (an erasure)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one parameterised statement; return the number of rows changed."""
        status = await self._conn.execute(sql, *params, timeout=self.timeout)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement per row, pipelined by asyncpg (which does not report rows changed)."""
        await self._conn.executemany(sql, rows, timeout=self.timeout)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return [tuple(r) for r in await self._conn.fetch(sql, *params, timeout=self.timeout)]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        row = await self._conn.fetchrow(sql, *params, timeout=self.timeout)
        return tuple(row) if row is not None else None
