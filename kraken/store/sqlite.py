"""The embedded store: one SQLite file in WAL mode, written by one task through aiosqlite.

aiosqlite runs every statement in its own thread, so the event loop never blocks on disk.
One lock serialises this object's multi-statement transactions; cancellation mid-way
still rolls back (shielded) so the connection is never left inside a transaction.
"""
from __future__ import annotations

import contextlib
import functools
import sqlite3
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Sequence

import aiosqlite
import anyio

from kraken.store.record import FIELD_NAMES, RequestRecord
from kraken.store import erased
from kraken.store.accounts_sql import SQLITE_ACCOUNTS
from kraken.store.audit_sqlite import AUDIT
from kraken.store.billing_sql import SQLITE_BILLING
from kraken.store.errors import StoreDataError, StoreError, from_sqlite
from kraken.store.privacy_sql import SQLITE_PRIVACY
from kraken.store.signup_sql import SQLITE_SIGNUP
from kraken.store.email_changes_sql import SQLITE_EMAIL_CHANGES
from kraken.store.invitations_sql import SQLITE_INVITATIONS
from kraken.store.owners_sql import SQLITE_OWNERS
from kraken.store.reports_sql import SQLITE_REPORTS
from kraken.store.schema import MIGRATIONS, VERSION, statements


def _bind_null(value: None) -> None:
    """NULL, as the sqlite3 module binds None on its own. Registered as None's adapter (below)."""
    return None


# The sqlite3 module binds int, float, str and bytearray as they are, but takes None, bool and
# bytes through its adapter protocol: a registry miss, then a lookup of ``__adapt__`` on its
# PrepareProtocol type, whose AttributeError formats its message before it is cleared (~0.2
# us a value; a record binds 20, several None or bool). Registered adapters bind the same
# values without it. Process-wide: every SQLite connection binds them the same way.
sqlite3.register_adapter(type(None), _bind_null)
sqlite3.register_adapter(bool, int)  # True -> 1, False -> 0, as sqlite3 binds bool itself
sqlite3.register_adapter(bytes, bytes)  # a blob, as it is


_INSERT = "INSERT OR IGNORE INTO requests ({}) VALUES ({})".format(
    ", ".join(FIELD_NAMES),
    # byok None (a record built field by field) means managed access, not a skipped row.
    ", ".join("COALESCE(?, 0)" if name == "byok" else "?" for name in FIELD_NAMES),
)
_ROWS_PER_STATEMENT = 256
"""Rows of one multi-row INSERT at most: 5,120 host parameters (SQLite >= 3.32 allows 32,766)."""


def _statement_sizes(total: int) -> list[int]:
    """``total`` rows cut into full statements and a binary tail (e.g. 600 -> 256, 256, 64, 16,
    8): every size is a power of two, so the connection's statement cache holds at most nine
    compiled multi-row statements per INSERT. One size per remainder made it hold up to 128 of
    them, each compiled for hundreds of rows: tens of MB of RSS (tests/http/test_h2_memory.py)."""
    sizes = [_ROWS_PER_STATEMENT] * (total // _ROWS_PER_STATEMENT)
    rest = total % _ROWS_PER_STATEMENT
    bit = _ROWS_PER_STATEMENT
    while rest:
        bit >>= 1
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


@functools.lru_cache(maxsize=32)
def _multi_row(sql: str, n: int) -> str:
    """``sql`` (an INSERT with one row of values) with ``n`` rows: one statement, so one
    sqlite3_step (the GIL released once) for the lot. ``executemany`` steps once per row, and
    each step gives the GIL back and waits to take it again: behind a busy event loop that wait,
    per row, made the writer ~20x slower than alone (bench/closed_loop.py)."""
    head, values = sql.split(" VALUES ")
    return head + " VALUES " + ", ".join([values] * n)


def _insert_rows(db: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
    """``sql`` for every row of ``rows``, in multi-row statements of ``_statement_sizes``;
    returns the rows changed. Runs in the driver's thread (``db`` is its sqlite3 connection).
    SQLite runs a row's triggers before it inserts the next row, so a trigger reading what the
    previous row changed (the wallet ledger's balance) sees it."""
    changed, i = 0, 0
    for size in _statement_sizes(len(rows)):
        params = [value for row in rows[i:i + size] for value in row]
        i += size
        changed += max(db.execute(_multi_row(sql, size), params).rowcount, 0)
    return changed


def _padded_chunks(records: Sequence[RequestRecord]) -> tuple[int, list[list[Any]]]:
    """The batch's rows as the parameters of one multi-row ``_INSERT`` size, run by one
    ``executemany``: one hop to the driver's thread for the whole insert, where a binary tail
    of sizes took one per size. The size is the next power of two up to 256 rows (the statement
    cache still holds at most nine); the last chunk is filled up with copies of the batch's last
    record, which INSERT OR IGNORE skips as repeats of its request_id (rowcount counts rows
    stored). A record is the tuple of its values in column order: the row as it is (bool
    fallback_used binds as 0/1, bool being an int)."""
    size = min(_ROWS_PER_STATEMENT, 1 << (len(records) - 1).bit_length())
    rows = [*records, *[records[-1]] * (-len(records) % size)]
    return size, [[value for row in rows[i:i + size] for value in row]
                  for i in range(0, len(rows), size)]


class SqliteStore:
    """Request metadata in SQLite. Create with ``await SqliteStore.open(path)``."""

    audit = AUDIT
    """The audit chain's SQL (kraken/store/audit_sqlite.py)."""

    accounts = SQLITE_ACCOUNTS
    """The accounts SQL (kraken/store/accounts_sql.py)."""

    privacy = SQLITE_PRIVACY
    """GDPR export, erasure and retention SQL (kraken/store/privacy_sql.py)."""

    signup = SQLITE_SIGNUP
    """Pending sign-up links (kraken/store/signup_sql.py)."""

    email_changes = SQLITE_EMAIL_CHANGES
    """Pending email changes (kraken/store/email_changes_sql.py)."""

    invitations = SQLITE_INVITATIONS
    """Organisations' pending invitations (kraken/store/invitations_sql.py)."""

    owners = SQLITE_OWNERS
    """Who created each file and batch (kraken/store/owners_sql.py)."""

    billing = SQLITE_BILLING
    """Wallets, ledger, monthly usage, key totals (kraken/store/billing_sql.py)."""

    reports = SQLITE_REPORTS
    """Usage statistics (kraken/store/reports_sql.py)."""

    def __init__(self, conn: aiosqlite.Connection, busy_timeout_ms: int) -> None:
        self._conn = conn
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = anyio.Lock()
        self._erasure_key: bytes | None = None

    @classmethod
    async def open(
        cls, path: str, *, busy_timeout_ms: int = 5000, max_page_count: int | None = None
    ) -> "SqliteStore":
        """Open (creating if needed), set the pragmas, apply pending migrations.

        ``max_page_count`` optionally caps the file size; reaching it raises StoreFull.
        """
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            # busy_timeout first so switching to WAL waits for other connections.
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA secure_delete = ON")
            # The batch writer's throughput (bench/writer_bench.py): request ids are random, so
            # each batch dirties pages all over the request_id and ledger ref indexes. A 32 MiB
            # page cache (default 2 MiB; filled only as pages are used) keeps them in memory,
            # and checkpointing every 10,000 WAL pages (default 1,000: nearly every batch) copies
            # a page rewritten by many batches once. Crash safety is unchanged: WAL with
            # synchronous = NORMAL, and the meter's journal covers the last commits.
            await conn.execute("PRAGMA cache_size = -32768")
            await conn.execute("PRAGMA wal_autocheckpoint = 10000")
            store = cls(conn, busy_timeout_ms)
            await store._migrate()
            # Erasure digests' key: made by a migration, never changed; read once, not per batch.
            (key,), = await conn.execute_fetchall("SELECT key FROM erasure_key WHERE id = 1")
            store._erasure_key = bytes(key)
            if max_page_count is not None:
                await conn.execute_fetchall(f"PRAGMA max_page_count = {int(max_page_count)}")
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise from_sqlite(exc, "open") from exc
            raise
        return store

    async def _migrate(self) -> None:
        """Apply each pending migration in its own IMMEDIATE transaction.

        The version is re-read under the write lock, so two processes opening the same
        file at once apply each migration exactly once.
        """
        current = await self._user_version()
        if current > VERSION:
            raise StoreError(f"open: schema version {current} is newer than this Kraken ({VERSION})")
        for version in range(current + 1, VERSION + 1):
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                if await self._user_version() < version:
                    for stmt in statements(MIGRATIONS[version - 1]):
                        await self._conn.execute(stmt)
                    await self._conn.execute(f"PRAGMA user_version = {version}")
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    async def _user_version(self) -> int:
        async with self._conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def insert_records(
        self, records: Sequence[RequestRecord],
        hook: Callable[["Tx", Sequence[RequestRecord]], Awaitable[None]] | None = None,
    ) -> int:
        """Insert a batch in one transaction; return how many rows were new.

        ``INSERT OR IGNORE`` keyed on request_id makes replays (journal recovery, retries
        after a partial failure) idempotent. ``hook`` runs first in the same transaction
        (wallet debits, kraken/billing/guard.py), so both commit or neither does. Records of
        customers erased meanwhile are tombstoned and not billed (kraken/store/erased.py).

        Without a hook, or with one marked ``sqlite_inline`` (the billing guard's), the whole
        transaction is one job in the driver's thread (``_batch_job``): one hop to it and back
        per batch, where a statement each (BEGIN, erasure lookup, the hook's five or more,
        INSERT, COMMIT) cost one, each waiting for a busy event loop to wake. Such a hook runs
        in that thread with a ``ThreadTx``: still an ``async`` function (the Store interface's
        shape, which PostgreSQL awaits for real), it promises to await only its tx's methods,
        which never suspend (``_run_inline`` raises if one does). Any other hook (one waiting
        on the event loop) keeps the statement-per-hop path.
        """
        if not records:
            return 0
        async with self._lock:
            try:
                if hook is None or getattr(hook, "sqlite_inline", False):
                    # Shielded: the job runs to its COMMIT or ROLLBACK whatever happens to this
                    # task, and its outcome (so the hook's ``committed``) is what the caller sees.
                    with anyio.CancelScope(shield=True):
                        return await self._conn._execute(
                            _batch_job, self._conn._conn, records, hook, self._erasure_key)
                return await self._insert_awaiting(records, hook)
            except sqlite3.Error as exc:
                raise from_sqlite(exc, "insert_records") from exc
            except OverflowError as exc:  # an int beyond 64 bits: the driver cannot bind it
                raise StoreDataError("insert_records: OverflowError") from exc

    async def _insert_awaiting(self, records: Sequence[RequestRecord],
                               hook: Callable[["Tx", Sequence[RequestRecord]], Awaitable[None]],
                               ) -> int:
        """``insert_records`` with a hook that may wait on the event loop: one hop per statement."""
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            tx = Tx(self._conn)
            records, billed = await erased.scrub(tx, records, self._erasure_key)
            await hook(tx, billed)
            size, chunks = _padded_chunks(records)
            cur = await self._conn.executemany(_multi_row(_INSERT, size), chunks)
            inserted = max(cur.rowcount, 0)
            await self._conn.execute("COMMIT")
            return inserted
        except BaseException:
            await self._rollback()
            raise

    async def writable(self, *, timeout_ms: int = 100) -> bool:
        """True if the write lock can be taken within ``timeout_ms`` (BEGIN IMMEDIATE; ROLLBACK)."""
        with anyio.move_on_after(timeout_ms / 1000):
            async with self._lock:
                with anyio.CancelScope(shield=True):
                    return await self._probe(timeout_ms)
        return False

    async def _probe(self, timeout_ms: int) -> bool:
        try:
            await self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                await self._conn.execute("ROLLBACK")
                return True
            finally:
                await self._conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        except sqlite3.Error:
            await self._rollback()
            return False

    async def checkpoint(self) -> None:
        """Fold the WAL back into the database and truncate it (at shutdown, or idle)."""
        async with self._lock:
            try:
                # Its row read to the end: a statement left stepping would hold the next
                # batch job's COMMIT ("SQL statements in progress"), as the driver's thread
                # keeps its last result (this cursor) until it runs the next job.
                await self._conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise from_sqlite(exc, "checkpoint") from exc

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a read query (admin API, exports, tests)."""
        async with self._lock:
            try:
                return [tuple(r) for r in await self._conn.execute_fetchall(sql, params)]
            except sqlite3.Error as exc:
                raise from_sqlite(exc, "query") from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator["Tx"]:
        """One IMMEDIATE transaction for accounts, audit, wallet and erase code.

        Commits on normal exit, rolls back on any exception (including cancellation).
        sqlite3 errors surface as StoreError subclasses naming the operation.
        """
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield Tx(self._conn)
                await self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise from_sqlite(exc, "transaction") from exc
            except BaseException:
                await self._rollback()
                raise

    async def close(self) -> None:
        """Close the connection (and stop aiosqlite's thread)."""
        with anyio.CancelScope(shield=True):
            await self._conn.close()

    async def _rollback(self) -> None:
        # Issued unconditionally: SQLite may already have rolled back (e.g. on SQLITE_FULL),
        # and checking in_transaction from this thread could race aiosqlite's.
        with anyio.CancelScope(shield=True):
            try:
                await self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


class _SqlTables:
    """The SQL both transaction shapes (``Tx``, ``ThreadTx``) hand to the code they run."""

    __slots__ = ()
    audit = AUDIT
    """The audit chain's SQL, for appends inside an action's transaction."""

    accounts = SQLITE_ACCOUNTS
    """The accounts SQL (kraken/store/accounts_sql.py)."""

    privacy = SQLITE_PRIVACY
    """GDPR export, erasure and retention SQL (kraken/store/privacy_sql.py)."""

    signup = SQLITE_SIGNUP
    """Pending sign-up links (kraken/store/signup_sql.py)."""

    email_changes = SQLITE_EMAIL_CHANGES
    """Pending email changes (kraken/store/email_changes_sql.py)."""

    invitations = SQLITE_INVITATIONS
    """Organisations' pending invitations (kraken/store/invitations_sql.py)."""

    billing = SQLITE_BILLING
    """Wallet debits and monthly usage inside the batch (kraken/store/billing_sql.py)."""


class Tx(_SqlTables):
    """The statements of one open transaction (see ``SqliteStore.transaction``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one parameterised statement; return the number of rows changed."""
        cur = await self._conn.execute(sql, params)
        return max(cur.rowcount, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        cur = await self._conn.executemany(sql, rows)
        return max(cur.rowcount, 0)

    async def insert_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """``sql`` (an INSERT with one row of values) for every row, in multi-row statements:
        what ``executemany`` does, at one GIL hand-over per statement instead of per row."""
        return await self._conn._execute(_insert_rows, self._conn._conn, sql, rows)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return [tuple(r) for r in await self._conn.execute_fetchall(sql, params)]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return tuple(rows[0]) if rows else None


class ThreadTx(_SqlTables):
    """A batch's statements inside its job in the driver's thread (``_batch_job``).

    The methods are ``async`` so that the batch hook keeps the one shape both backends call
    (``Tx``), but each runs its statement on the sqlite3 connection at once and never suspends:
    the hook's coroutine runs to its end in one ``send`` (``_run_inline``)."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return max(self._db.execute(sql, params).rowcount, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return max(self._db.executemany(sql, rows).rowcount, 0)

    async def insert_rows(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return _insert_rows(self._db, sql, rows)

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return [tuple(r) for r in self._db.execute(sql, params).fetchall()]

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self._db.execute(sql, params).fetchall()  # to the end: no statement left open
        return tuple(rows[0]) if rows else None


def _run_inline(coro: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that awaits nothing but ``ThreadTx`` methods (so never
    suspends), run here in the driver's thread; one that would wait on the event loop is a bug."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a SQLite batch hook may await only its tx's methods")


def _batch_job(db: sqlite3.Connection, records: Sequence[RequestRecord],
               hook: Callable[[Any, Sequence[RequestRecord]], Awaitable[None]] | None,
               erasure_key: bytes | None) -> int:
    """``insert_records``' transaction, whole, in the driver's thread; returns the rows stored."""
    db.execute("BEGIN IMMEDIATE")
    try:
        tx = ThreadTx(db)
        records, billed = _run_inline(erased.scrub(tx, records, erasure_key))
        if hook is not None:
            _run_inline(hook(tx, billed))
        size, chunks = _padded_chunks(records)
        inserted = max(db.executemany(_multi_row(_INSERT, size), chunks).rowcount, 0)
        db.execute("COMMIT")
        return inserted
    except BaseException:
        # Issued unconditionally: SQLite may already have rolled back (e.g. on SQLITE_FULL).
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
