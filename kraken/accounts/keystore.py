"""The database as a key source for the gateway's ``KeyVerifier``.

Called only on a key-cache miss (like bcrypt), never per cached request: one indexed
lookup by key id, joined with the customer for the plan and opt-out the pipeline needs.
"""
from __future__ import annotations

import time

from kraken.accounts.validation import models_from_json
from kraken.accounts.principal import KeyRow, Principal

_LOOKUP = (
    "SELECT k.hash, k.customer_id, k.rpm, k.tpm, k.max_concurrent, k.allowed_models, "
    "c.plan, c.opted_out, k.token_budget, k.spend_budget_usd, k.expires_at "
    "FROM api_keys k JOIN customers c ON c.id = k.customer_id "
    "WHERE k.id = ? AND k.revoked_at IS NULL"
)


class DbKeySource:
    """``fetch(key_id)``: the usable key row, or None for unknown, revoked or expired keys.

    ``store`` is any object with ``fetch_all(sql, params)`` (a ``SqliteStore``); a separate
    read connection keeps these lookups from queuing behind the metadata writer.
    """

    def __init__(self, store) -> None:
        self._store = store

    async def fetch(self, key_id: str) -> KeyRow | None:
        rows = await self._store.fetch_all(_LOOKUP, (key_id,))
        if not rows:
            return None
        (hashed, customer_id, rpm, tpm, max_concurrent, allowed, plan, opted_out,
         token_budget, spend_budget, expires_at) = rows[0]
        if expires_at is not None and expires_at <= time.time():
            return None
        principal = Principal(
            key_id, customer_id, rpm, tpm, max_concurrent,
            allowed_models=None if allowed is None else frozenset(models_from_json(allowed)),
            plan=plan, opted_out=bool(opted_out), token_budget=token_budget,
            spend_budget_usd=spend_budget)
        return KeyRow(hashed, principal, expires_at)
