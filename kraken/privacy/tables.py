"""Which tables hold a customer's data, found from the schema itself.

Export and erasure both walk every table with a ``customer_id`` column, so a table added by
a later migration (BYOK keys, wallets, ...) is covered without touching this package. Names
come from the database's own catalogue (``store.privacy.tables``), never from input.
"""
from __future__ import annotations

import re

from kraken.store.interface import Store

NOT_ACCOUNT_DATA = frozenset({"requests", "audit_log", "audit_anchor", "customers"})
"""Handled on their own (request metadata, the audit chain, the customer row itself)."""
SECRET_COLUMN = re.compile(r"hash|secret|cipher|nonce|salt|wrapped|token$|^iv$|^tag$|^key$",
                           re.IGNORECASE)
"""Columns never exported: key hashes, BYOK ciphertexts and their nonces."""


async def customer_tables(store: Store, keys: tuple[str, ...] = ("customer_id",),
                          ) -> list[tuple[str, list[str], str]]:
    """``(table, columns, key column)`` for every table with one of the ``keys`` columns
    (``wallet_id`` is a customer id too), in creation order."""
    out = []
    for name, cols in await store.privacy.tables(store):
        if name in NOT_ACCOUNT_DATA:
            continue
        key = next((k for k in keys if k in cols), None)
        if key is not None:
            out.append((name, cols, key))
    return out
