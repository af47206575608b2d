"""The privacy statements in PostgreSQL's spelling (kraken/store/privacy_sql.py runs them).

The catalogue is ``pg_class`` (tables in creation order: their oids grow with each migration) and
``information_schema.columns``; placeholders are numbered; the retention purge picks its rows by
primary key (there is no rowid). Marking an erased customer takes the erasure lock exclusive
(kraken/store/postgres/erased.py), so batches in flight on any host commit first and later ones
see the mark. Flags come back as 0/1, as SQLite gives them, so an export reads the same.

After an erasure nothing is pushed out by hand, and no ``VACUUM`` is run: the deleted rows are
gone from every query and every dump at commit, but PostgreSQL does not overwrite their bytes.
Measured on PostgreSQL 15 (an erasure, then ``VACUUM (INDEX_CLEANUP ON)`` of every table, then
``CHECKPOINT``, then a grep of the database's files): the email left the heap, yet the customer
id was still in ``requests`` pages and in the ``requests_customer_ts``, ``api_keys_customer``
and ``wallet_erasures_pkey`` index pages (vacuum frees space, it does not zero it), and both
were in the WAL segments under ``pg_wal`` whatever was run. Only ``VACUUM FULL`` (an exclusive
lock on each table, stopping every host's writer for the rewrite of ``requests``) cleared the
table files, and not the WAL. A vacuum after each erasure would therefore cost a scan of
``requests`` without a guarantee to show for it; ``leftovers`` says what remains, the README
how an operator who must can go further.
"""
from __future__ import annotations

from typing import Any

from kraken.store.postgres import erased
from kraken.store.postgres.accounts import numbered
from kraken.store.privacy_sql import STATEMENTS, Dialect, PrivacyRepository
from kraken.store.record import FIELD_NAMES

_CATALOGUE = {
    "tables": ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
               "WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema() ORDER BY c.oid"),
    "columns": ("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = ? ORDER BY ordinal_position"),
    "mark_wallet_erased": ("INSERT INTO wallet_erasures (wallet_id, ts) VALUES (?, ?) "
                           "ON CONFLICT (wallet_id) DO NOTHING"),
    "delete_signup_links": "DELETE FROM signup_links WHERE lower(email) = lower(?)",
    "purge_requests": ("DELETE FROM requests WHERE request_id IN "
                       "(SELECT request_id FROM requests WHERE ts < ? LIMIT ?)"),
}

STATEMENTS_PG: dict[str, str] = {name: numbered(_CATALOGUE.get(name, sql))
                                 for name, sql in STATEMENTS.items()}

_FLAGS = tuple(i for i, name in enumerate(FIELD_NAMES) if name in ("fallback_used", "byok"))


def _as_sqlite(row: tuple) -> tuple:
    out = list(row)
    for i in _FLAGS:
        if out[i] is not None:
            out[i] = int(out[i])
    return tuple(out)


ERASURE_TIMEOUT_S = 3600.0
"""The client's bound on each statement of an erasure."""


async def _mark_erased(tx: Any, customer_id: str, *, keep_billing_records: bool) -> None:
    """``erased.mark``, first lifting the statement timeout for the rest of the erasure: its
    deletes take every request and ledger row of the customer (a million ledger rows, each
    checked by the ledger's row trigger: ~7 s), which the hot path's 5 s would cut every time.
    Batches on every host wait for it meanwhile (the erasure lock), and retry."""
    await tx.execute("SET LOCAL statement_timeout = 0")
    tx.timeout = ERASURE_TIMEOUT_S
    await erased.mark(tx, customer_id, keep_billing_records=keep_billing_records)


async def _nothing_to_push(_store: Any) -> None:
    """No step of ours pushes the bytes out (module docstring): None, not a failed True."""
    return None


LEFTOVERS = ("the rows are gone from every query and every pg_dump; PostgreSQL keeps their "
             "bytes in dead tuples and index pages until new rows reuse the space, and in WAL "
             "segments (and WAL archives, backups) until they are overwritten or expire")
POSTGRES = Dialect(STATEMENTS_PG, _mark_erased, _nothing_to_push, _as_sqlite, LEFTOVERS)
POSTGRES_PRIVACY = PrivacyRepository(POSTGRES)
"""PostgreSQL's privacy repository (``PostgresStore.privacy``)."""
