"""The SQLite schema as numbered migrations.

``MIGRATIONS[i]`` takes the database from version ``i`` to ``i + 1`` (tracked in
``PRAGMA user_version``). Adding a migration is appending one string; never edit a
shipped one. Nothing here may hold prompt or response text.
"""
from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: one metadata row per request, columns named after RequestRecord's fields.
    """
    CREATE TABLE requests (
        ts                REAL    NOT NULL,
        request_id        TEXT    NOT NULL PRIMARY KEY,
        customer_id       TEXT,
        model_requested   TEXT,
        model_dispatched  TEXT,
        provider          TEXT,
        prompt_tokens     INTEGER,
        completion_tokens INTEGER,
        cached_tokens     INTEGER,
        reasoning_tokens  INTEGER,
        latency_ms        REAL    NOT NULL,
        ttfb_ms           REAL,
        task_type         TEXT,
        cost_usd          REAL,
        kraken_fee_usd    REAL,
        fallback_used     INTEGER NOT NULL CHECK (fallback_used IN (0, 1)),
        error_type        TEXT,
        status            INTEGER NOT NULL
    );
    CREATE INDEX requests_ts ON requests (ts);
    CREATE INDEX requests_customer_ts ON requests (customer_id, ts);
    """,
    # 2: accounts: customers, organisations, members, API keys, revocations (kraken/accounts).
    "",
    # 3: the hash-chained admin audit log (kraken/audit).
    "",
    # 4: BYOK provider keys, AES-256-GCM ciphertexts (kraken/accounts/byok).
    "",
    # 5: plans, wallets and wallet transactions (kraken/billing/wallet).
    "",
]

VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """Split a migration into single statements.

    ``executescript`` would COMMIT first, so each statement is run on its own inside the
    migration's transaction; ``sqlite3.complete_statement`` keeps triggers and ';' inside
    string literals whole.
    """
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                out.append(pending.strip())
            pending = ""
    if pending.strip(" \t\n;"):
        out.append(pending.strip())
    return out
