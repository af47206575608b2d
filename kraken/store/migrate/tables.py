"""What ``kraken migrate`` copies, in dependency order, and how each table meets its triggers.

Every table of the schema is listed here except the single-row tables the migrations create
(``byok_state``, ``erasure_key``: set to the source's values after the copy) and the version
table. A table missing from this list would be caught by ``unlisted`` before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    order: str
    """ORDER BY of the source read: the primary key (the trigger-sensitive ones need it)."""
    columns: tuple[str, ...] | None = None
    """Only these columns (None: every column, which must match the target's)."""
    identity: str | None = None
    """A generated id whose sequence must continue past the copied ids."""


TABLES: tuple[Table, ...] = (
    Table("customers", "id"),
    Table("organisations", "id"),
    Table("members", "org_id, customer_id"),
    Table("api_keys", "id"),  # triggers fire on UPDATE/DELETE only: inserting emits no events
    Table("key_events", "seq", identity="seq"),
    Table("byok_keys", "customer_id, provider"),  # bumps byok_state: reset after the copy
    Table("audit_anchor", "id"),  # before the log: the chain starts at the anchor
    Table("audit_log", "seq"),  # inserts are unchecked; updates and deletes are refused
    Table("wallet_erasures", "wallet_id"),
    # A wallet must start empty (wallets_start_empty); its balance and last_tx_id are rebuilt
    # by wallet_transactions' statement trigger, which checks every row's balance_after against
    # the running balance in id order, so the ledger goes in by id, chunk after chunk.
    Table("wallets", "wallet_id", columns=("wallet_id", "created_ts")),
    Table("wallet_transactions", "id", identity="id"),
    Table("usage_monthly", "customer_id, month"),
    Table("erased_customers", "digest"),
    Table("signup_links", "token_hash"),
    Table("object_owners", "provider, kind, object_id"),
    Table("email_change_links", "token_hash"),
    Table("org_invitations", "id"),
    Table("requests", "rowid"),  # last and largest: file order, no index walk
)

SINGLETONS = ("byok_state", "erasure_key")
"""One row each, created by the migrations; updated to the source's values."""

NOT_COPIED = frozenset({"sqlite_sequence", "sqlite_stat1", "sqlite_stat4", "kraken_schema"})


def unlisted(source_tables: set[str]) -> set[str]:
    """Tables of the source this plan does not know (a schema change not taught here)."""
    known = {t.name for t in TABLES} | set(SINGLETONS) | NOT_COPIED
    return source_tables - known
