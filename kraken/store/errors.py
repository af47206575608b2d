"""Store failures as types, mapped once from sqlite3 errors.

The writer keeps a failed batch and retries; the type says why (and which metric label).
Messages name the operation and the SQLite error code, never a row's content.
"""
from __future__ import annotations

import sqlite3


class StoreError(Exception):
    """A store operation failed; the caller's data was not (or not fully) written."""

    reason = "other"


class StoreBusy(StoreError):
    """Another connection holds the write lock (SQLITE_BUSY / SQLITE_LOCKED)."""

    reason = "busy"


class StoreFull(StoreError):
    """No room left: SQLITE_FULL (disk full or ``max_page_count`` reached)."""

    reason = "full"


class StoreDataError(StoreError):
    """A row was refused by the schema (constraint, unsupported type): retrying won't help.

    The writer isolates such rows instead of retrying the whole batch forever.
    """

    reason = "data"


_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def from_sqlite(exc: sqlite3.Error, operation: str) -> StoreError:
    """Map a sqlite3 exception to a StoreError whose message carries no row content."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    primary = code & 0xFF if isinstance(code, int) else None
    message = f"{operation}: {name}"
    if primary in _BUSY:
        return StoreBusy(message)
    if primary == sqlite3.SQLITE_FULL:
        return StoreFull(message)
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.InterfaceError)):
        return StoreDataError(message)
    return StoreError(message)
