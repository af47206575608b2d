"""The SQLite side of ``kraken migrate``: one existing Kraken file, opened read-only.

The file is opened with the ``mode=ro`` URI (SQLite refuses every write on that connection, so
the source cannot be changed, whatever happens to the copy) and read inside one read
transaction: every table, count and balance comes from the same snapshot even if a Kraken still
writes to the file. Rows are read through one stepping cursor per table, ``CHUNK_ROWS`` at a time.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import quote

from kraken.store.errors import StoreError
from kraken.store.schema import VERSION

CHUNK_ROWS = 2000
"""Rows held in memory at once (one chunk read from SQLite, then sent as one COPY)."""


class MigrationRefused(StoreError):
    """The migration did not start: the source or the target is not what it must be."""

    reason = "refused"


class SqliteSource:
    """A Kraken SQLite file in one read-only snapshot. ``open`` refuses anything else."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: str) -> "SqliteSource":
        """The file at ``path``, checked: a Kraken database at exactly this Kraken's version."""
        if not Path(path).is_file():
            raise MigrationRefused(f"source: no such file: {path}")
        uri = "file:" + quote(str(Path(path).resolve())) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise MigrationRefused(f"source: cannot open {path} read-only "
                                   f"({type(exc).__name__})") from exc
        try:
            conn.execute("BEGIN")  # one snapshot for every read below
            _check_kraken(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    def tables(self) -> set[str]:
        return {row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def columns(self, table: str) -> list[str]:
        return [row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")]

    def count(self, table: str) -> int:
        return self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def chunks(self, sql: str) -> Iterator[list[tuple]]:
        """The rows of ``sql``, ``CHUNK_ROWS`` at a time (the cursor steps; nothing else held)."""
        cursor = self._conn.execute(sql)
        try:
            while rows := cursor.fetchmany(CHUNK_ROWS):
                yield rows
        finally:
            cursor.close()

    def one(self, sql: str, params: Sequence = ()) -> tuple | None:
        return self._conn.execute(sql, tuple(params)).fetchone()

    def next_id(self, table: str, column: str) -> int:
        """The highest id ever handed out: AUTOINCREMENT remembers ids of deleted rows too."""
        high = self.one(f"SELECT MAX({column}) FROM {table}")[0] or 0
        seq = self.one("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        return max(int(high), int(seq[0]) if seq else 0)


def _check_kraken(conn: sqlite3.Connection, path: str) -> None:
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_requests = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'requests'").fetchone()
    except sqlite3.OperationalError as exc:  # e.g. a WAL file in a directory it cannot read
        raise MigrationRefused(f"source: cannot read {path} ({type(exc).__name__})") from exc
    except sqlite3.DatabaseError as exc:
        raise MigrationRefused(f"source: {path} is not a SQLite database "
                               f"({type(exc).__name__})") from exc
    if not version or not has_requests:
        raise MigrationRefused(f"source: {path} is not a Kraken database")
    if version > VERSION:
        raise MigrationRefused(f"source: schema version {version} is newer than this Kraken "
                               f"({VERSION}); migrate with that Kraken's version")
    if version < VERSION:
        raise MigrationRefused(f"source: schema version {version} is older than this Kraken "
                               f"({VERSION}); start this Kraken on it once to upgrade it first")
