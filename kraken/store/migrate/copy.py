"""Copy a Kraken SQLite file into an empty PostgreSQL database, verify, and only then commit.

Everything happens in ONE target transaction: the schema migrations (the migration lock is held
until the end, so a Kraken host starting meanwhile waits), the emptiness check, every table,
the single-row tables, the sequences and the verification. Any failure or mismatch rolls it all
back and leaves the target as it was. Rows go in as binary COPY, ``CHUNK_ROWS`` per statement,
under the target's own triggers (see tables.py for what each one allows). Error messages name
the table and the error type, never a row's values (PostgreSQL's text can quote them).
"""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

import asyncpg

from kraken.store.errors import StoreDataError, StoreError, from_sqlite
from kraken.store.migrate.source import MigrationRefused, SqliteSource
from kraken.store.migrate.tables import TABLES, Table, unlisted
from kraken.store.postgres.errors import FAILURES, from_asyncpg
# The very migration PostgresStore.open runs, here inside the copy's own transaction.
from kraken.store.postgres.store import PgTx, _migrate

Check = Callable[[PgTx], Awaitable[tuple[bool, str]]]
"""A check run on the target inside the transaction before commit: (passed, one line to print)."""

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class TableCount:
    name: str
    source: int
    copied: int
    target: int

    @property
    def ok(self) -> bool:
        return self.source == self.copied == self.target


@dataclass(slots=True)
class Report:
    """What was copied and what the verification found."""

    tables: list[TableCount] = field(default_factory=list)
    wallets_compared: int = 0
    wallets_differing: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class VerificationFailed(StoreError):
    """The copy does not match the source; the target transaction was rolled back."""

    reason = "mismatch"

    def __init__(self, report: Report) -> None:
        super().__init__("verification failed: " + "; ".join(report.problems))
        self.report = report


async def migrate(source_path: str, dsn: str, *, check: Check | None = None) -> Report:
    """Copy the Kraken file at ``source_path`` into the empty database at ``dsn``.

    Raises MigrationRefused (nothing started), VerificationFailed or another StoreError (the
    target rolled back). The source is only ever read.
    """
    source = SqliteSource.open(source_path)
    try:
        unknown = unlisted(source.tables())
        if unknown:
            raise MigrationRefused(f"source: tables this Kraken cannot copy: "
                                   f"{', '.join(sorted(unknown))}")
        try:
            conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S, server_settings={
                "statement_timeout": "0", "application_name": "kraken-migrate"})
        except FAILURES as exc:
            raise from_asyncpg(exc, "target: connect") from exc
        try:
            report = await _in_one_transaction(source, conn, check)
        except FAILURES as exc:
            raise from_asyncpg(exc, "target") from exc
        except sqlite3.Error as exc:  # a page the source cannot read (the target rolled back)
            raise from_sqlite(exc, "source: read") from exc
        else:
            with contextlib.suppress(*FAILURES):  # committed; statistics are only a help
                await conn.execute("ANALYZE")  # the planner learns the new rows' sizes now
            return report
        finally:
            await conn.close()
    finally:
        source.close()


async def _in_one_transaction(source: SqliteSource, conn: asyncpg.Connection,
                              check: Check | None) -> Report:
    async with conn.transaction():
        await _prepare(conn)
        copied = {t.name: await _copy_table(source, conn, t) for t in TABLES}
        await _singletons(source, conn)
        await _sequences(source, conn)
        report = await _verify(source, conn, copied, check)
        if not report.ok:
            raise VerificationFailed(report)
    return report


async def _prepare(conn: asyncpg.Connection) -> None:
    """Kraken's schema at this version (created if absent), and refused unless empty."""
    try:
        await _migrate(conn)
    except asyncpg.PostgresError as exc:
        raise MigrationRefused(f"target: cannot create Kraken's schema ({type(exc).__name__} "
                               f"{exc.sqlstate}); migrate into an empty database") from exc
    except StoreError as exc:  # a newer Kraken's schema
        raise MigrationRefused(f"target: {exc}") from exc
    for table in TABLES:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table.name})"):
            raise MigrationRefused(f"target already holds Kraken data ({table.name} has rows); "
                                   "migrate only into an empty database")
    if await conn.fetchval("SELECT generation FROM byok_state WHERE id = 1"):
        raise MigrationRefused("target already holds Kraken data (BYOK keys were written); "
                               "migrate only into an empty database")


_CONVERT: dict[str, Callable[[Any], Any]] = {
    # SQLite keeps flags as 0/1 and may keep a whole REAL as an integer; asyncpg's binary
    # codecs want the Python type of the column. Anything else odd is refused by the codec.
    "boolean": lambda v: v if v is None or isinstance(v, bool) else
    bool(v) if isinstance(v, int) and v in (0, 1) else v,
    "double precision": lambda v: float(v) if type(v) is int else v,
    "bytea": lambda v: bytes(v) if isinstance(v, memoryview) else v,
}


async def _copy_table(source: SqliteSource, conn: asyncpg.Connection, table: Table) -> int:
    """Stream one table into the target, a chunk per COPY; returns rows copied."""
    types = dict(await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = $1", table.name))
    src_columns = source.columns(table.name)
    if table.columns is None and set(src_columns) != set(types):
        raise MigrationRefused(f"{table.name}: the source's columns differ from the target's")
    columns = list(table.columns or src_columns)
    convert = [_CONVERT.get(types[c]) for c in columns]
    sql = f"SELECT {', '.join(columns)} FROM {table.name} ORDER BY {table.order}"
    copied = 0
    for rows in source.chunks(sql):
        try:
            await conn.copy_records_to_table(table.name, records=_converted(rows, convert),
                                             columns=columns)
        except FAILURES as exc:
            raise from_asyncpg(exc, f"copy {table.name}") from exc
        except (TypeError, ValueError, OverflowError) as exc:
            raise StoreDataError(f"copy {table.name}: {type(exc).__name__}") from exc
        copied += len(rows)
    return copied


def _converted(rows: list[tuple], convert: list[Callable[[Any], Any] | None]) -> Iterable[tuple]:
    if not any(convert):
        return rows
    return [tuple(v if f is None else f(v) for f, v in zip(convert, row)) for row in rows]


async def _singletons(source: SqliteSource, conn: asyncpg.Connection) -> None:
    """The source's BYOK generation and erasure key (so erased customers stay erased)."""
    generation, keys = source.one("SELECT generation, keys FROM byok_state WHERE id = 1")
    await conn.execute("UPDATE byok_state SET generation = $1, keys = $2 WHERE id = 1",
                       generation, keys)
    (key,) = source.one("SELECT key FROM erasure_key WHERE id = 1")
    await conn.execute("UPDATE erasure_key SET key = $1 WHERE id = 1", bytes(key))


async def _sequences(source: SqliteSource, conn: asyncpg.Connection) -> None:
    """Each identity continues past every id the source ever handed out."""
    for table in TABLES:
        if table.identity and (high := source.next_id(table.name, table.identity)):
            await conn.execute("SELECT setval(pg_get_serial_sequence($1, $2), $3)",
                               table.name, table.identity, high)


async def _verify(source: SqliteSource, conn: asyncpg.Connection, copied: dict[str, int],
                  check: Check | None) -> Report:
    report = Report()
    for table in TABLES:
        target = await conn.fetchval(f"SELECT count(*) FROM {table.name}")
        count = TableCount(table.name, source.count(table.name), copied[table.name], target)
        report.tables.append(count)
        if not count.ok:
            report.problems.append(f"{table.name}: {count.source} rows in the source, "
                                   f"{count.target} in the target")
    await _compare_wallets(source, conn, report)
    for sql, what in (("SELECT generation, keys FROM byok_state WHERE id = 1", "byok_state"),
                      ("SELECT key FROM erasure_key WHERE id = 1", "erasure key"),
                      ("SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1", "audit head")):
        mine, theirs = source.one(sql), await conn.fetchrow(sql)
        if _plain(mine) != _plain(theirs):
            report.problems.append(f"{what} differs")
    if check is not None:
        passed, line = await check(PgTx(conn))
        (report.notes if passed else report.problems).append(line)
    return report


def _plain(row: Any) -> tuple | None:
    return None if row is None else tuple(bytes(v) if isinstance(v, memoryview) else v
                                          for v in row)


async def _compare_wallets(source: SqliteSource, conn: asyncpg.Connection,
                           report: Report) -> None:
    """Every wallet's balance and last transaction, a chunk of wallets at a time."""
    for rows in source.chunks("SELECT wallet_id, balance_micros, last_tx_id FROM wallets "
                              "ORDER BY wallet_id"):
        target = {r[0]: (r[1], r[2]) for r in await conn.fetch(
            "SELECT wallet_id, balance_micros, last_tx_id FROM wallets "
            "WHERE wallet_id = ANY($1::text[])", [r[0] for r in rows])}
        for wallet_id, balance, last_tx_id in rows:
            report.wallets_compared += 1
            if target.get(wallet_id) != (balance, last_tx_id):
                report.wallets_differing += 1
    if report.wallets_differing:
        report.problems.append(f"{report.wallets_differing} of {report.wallets_compared} "
                               "wallet balances differ")
