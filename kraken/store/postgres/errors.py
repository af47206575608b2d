"""asyncpg and connection failures mapped once to kraken.store.errors types.

The meter keeps and retries a batch on any StoreError except StoreDataError, so a server that is
down, restarting or unreachable must never map to StoreDataError. Messages name the operation,
the exception type and the SQLSTATE, never PostgreSQL's message text: that can quote a row's
values ('invalid input syntax ...: "<value>"', a key's DETAIL).
"""
from __future__ import annotations

import asyncio

import asyncpg

from kraken.store.errors import StoreBusy, StoreDataError, StoreError, StoreFull

FAILURES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    asyncio.TimeoutError)
"""What a store operation may raise on a failure (OSError: refused, reset; TimeoutError: hung;
InternalClientError: a connection the server dropped mid-error, left in a state that refuses
the next statement)."""

_BUSY_STATES = frozenset({
    "57014",  # query_canceled: the statement timeout fired
    "55P03",  # lock_not_available
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "53300",  # too_many_connections
})
_FULL_STATES = frozenset({"53100", "53200"})  # disk_full, out_of_memory
_DATA_CLASSES = ("22", "23")  # data_exception, integrity_constraint_violation


def is_disconnect(exc: BaseException) -> bool:
    """The connection (or the server) is gone: the pool should drop its connections."""
    return isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
                            asyncpg.ConnectionDoesNotExistError, asyncpg.CannotConnectNowError,
                            asyncpg.AdminShutdownError, asyncpg.InterfaceError,
                            asyncpg.InternalClientError))


def from_asyncpg(exc: BaseException, operation: str) -> StoreError:
    """Map a failure to a StoreError whose message carries no row content."""
    state = getattr(exc, "sqlstate", None) or ""
    message = f"{operation}: {type(exc).__name__}" + (f" ({state})" if state else "")
    if state in _BUSY_STATES:
        return StoreBusy(message)
    if state in _FULL_STATES:
        return StoreFull(message)
    if state[:2] in _DATA_CLASSES:
        return StoreDataError(message)
    if isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError):
        return StoreDataError(message)  # a value the driver cannot encode for its column
    return StoreError(message)
