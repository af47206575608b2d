"""The database as a key source for the gateway's ``KeyVerifier``.

Called only on a key-cache miss (like bcrypt), never per cached request: one indexed
lookup by key id, joined with the customer for the plan and opt-out the pipeline needs
(``usable_key`` of the store's accounts repository).
"""
from __future__ import annotations

import time

from kraken.accounts.validation import models_from_json
from kraken.accounts.principal import KeyRow, Principal


class DbKeySource:
    """``fetch(key_id)``: the usable key row, or None for unknown, revoked or expired keys.

    ``store`` is a store (``SqliteStore`` or ``PostgresStore``); with SQLite a separate read
    connection keeps these lookups from queuing behind the metadata writer.
    """

    def __init__(self, store) -> None:
        self._store = store
        self._accounts = store.accounts

    async def fetch(self, key_id: str) -> KeyRow | None:
        row = await self._accounts.usable_key(self._store, key_id)
        if row is None:
            return None
        (hashed, customer_id, rpm, tpm, max_concurrent, allowed, plan, opted_out,
         token_budget, spend_budget, expires_at) = row
        if expires_at is not None and expires_at <= time.time():
            return None
        principal = Principal(
            key_id, customer_id, rpm, tpm, max_concurrent,
            allowed_models=None if allowed is None else frozenset(models_from_json(allowed)),
            plan=plan, opted_out=bool(opted_out), token_budget=token_budget,
            spend_budget_usd=spend_budget)
        return KeyRow(hashed, principal, expires_at)
