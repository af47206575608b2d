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
    # Times are Unix seconds (REAL). key_events is written by triggers, so every change to a
    # key (revoke, delete, cascade from a deleted customer or organisation, new limits, a
    # customer's plan or opt-out) reaches every Kraken process's key cache, whoever wrote it.
    """
    CREATE TABLE customers (
        id          TEXT    NOT NULL PRIMARY KEY,
        email       TEXT    NOT NULL COLLATE NOCASE UNIQUE,
        name        TEXT,
        plan        TEXT    NOT NULL DEFAULT 'default',
        opted_out   INTEGER NOT NULL DEFAULT 0 CHECK (opted_out IN (0, 1)),
        created_at  REAL    NOT NULL
    );
    CREATE TABLE organisations (
        id          TEXT    NOT NULL PRIMARY KEY,
        name        TEXT    NOT NULL,
        created_at  REAL    NOT NULL
    );
    CREATE TABLE members (
        org_id      TEXT    NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
        customer_id TEXT    NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
        role        TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'restricted')),
        created_at  REAL    NOT NULL,
        PRIMARY KEY (org_id, customer_id)
    ) WITHOUT ROWID;
    CREATE INDEX members_customer ON members (customer_id);
    CREATE TABLE api_keys (
        id               TEXT    NOT NULL PRIMARY KEY,
        customer_id      TEXT    NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
        org_id           TEXT    REFERENCES organisations (id) ON DELETE CASCADE,
        name             TEXT,
        hash             TEXT    NOT NULL,
        created_at       REAL    NOT NULL,
        expires_at       REAL,
        revoked_at       REAL,
        allowed_models   TEXT,
        rpm              INTEGER NOT NULL DEFAULT 0,
        tpm              INTEGER NOT NULL DEFAULT 0,
        max_concurrent   INTEGER NOT NULL DEFAULT 0,
        token_budget     INTEGER,
        spend_budget_usd REAL
    );
    CREATE INDEX api_keys_customer ON api_keys (customer_id);
    CREATE INDEX api_keys_org ON api_keys (org_id);
    CREATE TABLE key_events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id  TEXT    NOT NULL,
        ts      REAL    NOT NULL
    );
    CREATE INDEX key_events_ts ON key_events (ts);
    CREATE TRIGGER api_keys_changed AFTER UPDATE ON api_keys BEGIN
        INSERT INTO key_events (key_id, ts)
        VALUES (old.id, (julianday('now') - 2440587.5) * 86400.0);
    END;
    CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys BEGIN
        INSERT INTO key_events (key_id, ts)
        VALUES (old.id, (julianday('now') - 2440587.5) * 86400.0);
    END;
    CREATE TRIGGER customers_changed AFTER UPDATE OF plan, opted_out ON customers BEGIN
        INSERT INTO key_events (key_id, ts)
        SELECT id, (julianday('now') - 2440587.5) * 86400.0
        FROM api_keys WHERE customer_id = old.id;
    END;
    """,
    # 3: the hash-chained admin audit log (kraken/audit).
    """
    CREATE TABLE audit_log (
        seq             INTEGER PRIMARY KEY,
        ts              REAL    NOT NULL,
        actor           TEXT    NOT NULL,
        action          TEXT    NOT NULL,
        target          TEXT,
        subject         TEXT,
        salt            TEXT    NOT NULL,
        target_digest   TEXT    NOT NULL,
        subject_digest  TEXT    NOT NULL,
        detail          TEXT    NOT NULL,
        prev_hash       TEXT    NOT NULL,
        hash            TEXT    NOT NULL
    );
    CREATE INDEX audit_log_ts ON audit_log (ts);
    CREATE INDEX audit_log_subject ON audit_log (subject);
    CREATE TABLE audit_anchor (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        last_seq   INTEGER NOT NULL,
        last_hash  TEXT    NOT NULL,
        purged_at  REAL    NOT NULL
    );
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    WHEN NOT (NEW.seq IS OLD.seq AND NEW.ts IS OLD.ts AND NEW.actor IS OLD.actor
              AND NEW.action IS OLD.action AND NEW.salt IS OLD.salt
              AND NEW.target_digest IS OLD.target_digest
              AND NEW.subject_digest IS OLD.subject_digest AND NEW.detail IS OLD.detail
              AND NEW.prev_hash IS OLD.prev_hash AND NEW.hash IS OLD.hash
              AND (NEW.target IS OLD.target OR NEW.target IS NULL)
              AND (NEW.subject IS OLD.subject OR NEW.subject IS NULL))
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_purge_only BEFORE DELETE ON audit_log
    WHEN OLD.seq > COALESCE((SELECT last_seq FROM audit_anchor WHERE id = 1), 0)
    BEGIN SELECT RAISE(ABORT, 'audit_log entries are removed only by retention purge'); END;
    """,
    # 4: BYOK provider keys, AES-256-GCM ciphertexts (kraken/accounts/byok). No plaintext
    # fragment is stored. byok_state.generation changes with every write (triggers, so CLI,
    # admin API and cascades alike), and each process's key cache polls that one row.
    """
    CREATE TABLE byok_keys (
        customer_id TEXT    NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
        provider    TEXT    NOT NULL,
        key_version INTEGER NOT NULL,
        nonce       BLOB    NOT NULL,
        ciphertext  BLOB    NOT NULL,
        created_at  REAL    NOT NULL,
        updated_at  REAL    NOT NULL,
        PRIMARY KEY (customer_id, provider)
    ) WITHOUT ROWID;
    CREATE TABLE byok_state (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        generation  INTEGER NOT NULL,
        keys        INTEGER NOT NULL
    );
    INSERT INTO byok_state (id, generation, keys) VALUES (1, 0, 0);
    CREATE TRIGGER byok_keys_inserted AFTER INSERT ON byok_keys BEGIN
        UPDATE byok_state SET generation = generation + 1, keys = keys + 1 WHERE id = 1;
    END;
    CREATE TRIGGER byok_keys_updated AFTER UPDATE ON byok_keys BEGIN
        UPDATE byok_state SET generation = generation + 1 WHERE id = 1;
    END;
    CREATE TRIGGER byok_keys_deleted AFTER DELETE ON byok_keys BEGIN
        UPDATE byok_state SET generation = generation + 1, keys = keys - 1 WHERE id = 1;
    END;
    ALTER TABLE requests ADD COLUMN byok INTEGER NOT NULL DEFAULT 0 CHECK (byok IN (0, 1));
    """,
    # 5: wallets, their immutable transactions, monthly usage per customer (kraken/billing).
    # A balance changes only through the AFTER INSERT trigger of wallet_transactions, so it
    # always equals the sum of the wallet's transactions; rows are never updated, and deleted
    # only for a wallet tombstoned in wallet_erasures (account erasure without billing retention).
    """
    CREATE TABLE wallets (
        wallet_id       TEXT    NOT NULL PRIMARY KEY,
        balance_micros  INTEGER NOT NULL DEFAULT 0,
        last_tx_id      INTEGER NOT NULL DEFAULT 0,
        created_ts      REAL    NOT NULL
    );
    CREATE INDEX wallets_last_tx ON wallets (last_tx_id);
    CREATE TABLE wallet_transactions (
        id                    INTEGER PRIMARY KEY AUTOINCREMENT,
        wallet_id             TEXT    NOT NULL REFERENCES wallets (wallet_id),
        kind                  TEXT    NOT NULL
                              CHECK (kind IN ('top_up', 'usage_debit', 'refund', 'adjustment')),
        amount_micros         INTEGER NOT NULL CHECK (amount_micros != 0),
        ref                   TEXT    NOT NULL UNIQUE,
        ts                    REAL    NOT NULL,
        balance_after_micros  INTEGER NOT NULL,
        CHECK (kind != 'top_up' OR amount_micros > 0),
        CHECK (kind != 'usage_debit' OR amount_micros < 0)
    );
    CREATE INDEX wallet_transactions_wallet ON wallet_transactions (wallet_id, id);
    CREATE TABLE wallet_erasures (
        wallet_id  TEXT NOT NULL PRIMARY KEY,
        ts         REAL NOT NULL
    );
    CREATE TRIGGER wallets_start_empty BEFORE INSERT ON wallets
    WHEN NEW.balance_micros != 0 OR NEW.last_tx_id != 0
    BEGIN SELECT RAISE(ABORT, 'a wallet starts empty; credit it with a wallet transaction'); END;
    CREATE TRIGGER wallet_transactions_balance_after BEFORE INSERT ON wallet_transactions
    WHEN NEW.balance_after_micros IS NOT
         (SELECT balance_micros FROM wallets WHERE wallet_id = NEW.wallet_id) + NEW.amount_micros
    BEGIN SELECT RAISE(ABORT, 'balance_after_micros must be the balance plus the amount'); END;
    CREATE TRIGGER wallet_transactions_no_overdraft BEFORE INSERT ON wallet_transactions
    WHEN NEW.kind != 'usage_debit' AND NEW.amount_micros < 0 AND NEW.balance_after_micros < 0
    BEGIN SELECT RAISE(ABORT, 'insufficient wallet balance'); END;
    CREATE TRIGGER wallet_transactions_apply AFTER INSERT ON wallet_transactions BEGIN
        UPDATE wallets SET balance_micros = balance_micros + NEW.amount_micros, last_tx_id = NEW.id
        WHERE wallet_id = NEW.wallet_id;
    END;
    CREATE TRIGGER wallets_change_only_by_transaction BEFORE UPDATE ON wallets
    WHEN NEW.wallet_id IS NOT OLD.wallet_id OR NEW.created_ts IS NOT OLD.created_ts
         OR NEW.last_tx_id <= OLD.last_tx_id
         OR NEW.balance_micros IS NOT OLD.balance_micros + (
            SELECT amount_micros FROM wallet_transactions
            WHERE id = NEW.last_tx_id AND wallet_id = OLD.wallet_id)
    BEGIN SELECT RAISE(ABORT, 'a wallet balance changes only by a new wallet transaction'); END;
    CREATE TRIGGER wallet_transactions_immutable BEFORE UPDATE ON wallet_transactions
    BEGIN SELECT RAISE(ABORT, 'wallet transactions are immutable'); END;
    CREATE TRIGGER wallet_transactions_kept BEFORE DELETE ON wallet_transactions
    WHEN NOT EXISTS (SELECT 1 FROM wallet_erasures WHERE wallet_id = OLD.wallet_id)
    BEGIN SELECT RAISE(ABORT, 'wallet transactions are kept (erase the wallet instead)'); END;
    CREATE TRIGGER wallets_kept BEFORE DELETE ON wallets
    WHEN NOT EXISTS (SELECT 1 FROM wallet_erasures WHERE wallet_id = OLD.wallet_id)
    BEGIN SELECT RAISE(ABORT, 'wallets are kept (erase the wallet instead)'); END;
    CREATE TABLE usage_monthly (
        customer_id   TEXT    NOT NULL,
        month         TEXT    NOT NULL,
        tokens        INTEGER NOT NULL DEFAULT 0,
        spend_micros  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (customer_id, month)
    ) WITHOUT ROWID;
    CREATE INDEX usage_monthly_month ON usage_monthly (month);
    INSERT INTO usage_monthly (customer_id, month, tokens, spend_micros)
    SELECT customer_id, strftime('%Y-%m', ts, 'unixepoch'),
           SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)),
           CAST(ROUND(SUM(COALESCE(cost_usd, 0) + COALESCE(kraken_fee_usd, 0)) * 1000000) AS INTEGER)
    FROM requests WHERE customer_id IS NOT NULL GROUP BY 1, 2;
    """,
    # 6: the public key id on each request record, for per-key usage and budgets.
    """
    ALTER TABLE requests ADD COLUMN key_id TEXT;
    CREATE INDEX requests_key_ts ON requests (key_id, ts);
    """,
    # 7: erased customers as keyed digests (kraken/store/erased.py): every batch checks its
    # customers here in its own transaction, so a record ending after an erasure, in any
    # process, is tombstoned instead of bringing the id back. Never the raw id.
    """
    CREATE TABLE erasure_key (
        id   INTEGER PRIMARY KEY CHECK (id = 1),
        key  BLOB    NOT NULL
    );
    INSERT INTO erasure_key (id, key) VALUES (1, randomblob(32));
    CREATE TABLE erased_customers (
        digest        TEXT    NOT NULL PRIMARY KEY,
        keep_billing  INTEGER NOT NULL CHECK (keep_billing IN (0, 1))
    ) WITHOUT ROWID;
    """,
    # 8: nothing changes here. PostgreSQL's wallet triggers became per statement (its batch
    # inserts every debit in one statement); SQLite's run per row, one row after another, so a
    # multi-row insert already sees each row's effect. Kept so both numbers stay one for one.
    """
    SELECT 1;
    """,
    # 9: pending sign-up links (kraken/accounts/signup.py): the SHA-256 of the link's token
    # (never the token), the address the account will have, and when the link stops working.
    # A link is used or expired by deleting its row.
    """
    CREATE TABLE signup_links (
        token_hash  TEXT NOT NULL PRIMARY KEY,
        email       TEXT NOT NULL,
        created_at  REAL NOT NULL,
        expires_at  REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX signup_links_expires ON signup_links (expires_at);
    """,
    # 10: the audit chain commits to a salted digest of the actor (kraken/audit), so erasure
    # may blank an actor that names the erased customer's key; entries before this keep theirs.
    """
    ALTER TABLE audit_log ADD COLUMN actor_digest TEXT NOT NULL DEFAULT '';
    DROP TRIGGER audit_log_append_only;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    WHEN NOT (NEW.seq IS OLD.seq AND NEW.ts IS OLD.ts
              AND (NEW.actor IS OLD.actor OR (NEW.actor = '' AND OLD.actor_digest <> ''))
              AND NEW.action IS OLD.action AND NEW.salt IS OLD.salt
              AND NEW.target_digest IS OLD.target_digest
              AND NEW.subject_digest IS OLD.subject_digest AND NEW.detail IS OLD.detail
              AND NEW.prev_hash IS OLD.prev_hash AND NEW.hash IS OLD.hash
              AND NEW.actor_digest IS OLD.actor_digest
              AND (NEW.target IS OLD.target OR NEW.target IS NULL)
              AND (NEW.subject IS OLD.subject OR NEW.subject IS NULL))
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    """,
    # 11: who created each file and batch (kraken/gateway/endpoints/file_owners.py): ids and
    # their customer only, never a file's name or bytes. Erasure deletes the customer's rows.
    """
    CREATE TABLE object_owners (
        provider     TEXT NOT NULL,
        kind         TEXT NOT NULL CHECK (kind IN ('file', 'batch')),
        object_id    TEXT NOT NULL,
        customer_id  TEXT NOT NULL,
        created_at   REAL NOT NULL,
        PRIMARY KEY (provider, kind, object_id)
    ) WITHOUT ROWID;
    CREATE INDEX object_owners_customer ON object_owners (customer_id, provider, kind);
    """,
    # 12: consent of the person a self-service change affects. email_change_links: a pending
    # change of a customer's address, applied only through the link mailed to the new address
    # (the token's SHA-256, never the token). org_invitations: an organisation's pending
    # invitation, a membership only once the invitee accepts. The invitee's id has no foreign
    # key: an invitation to an id no customer has is kept like any other, so the answer never
    # tells whether the id exists. Erasure deletes both tables' rows of the customer.
    """
    CREATE TABLE email_change_links (
        token_hash   TEXT NOT NULL PRIMARY KEY,
        customer_id  TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
        email        TEXT NOT NULL,
        created_at   REAL NOT NULL,
        expires_at   REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX email_change_links_customer ON email_change_links (customer_id);
    CREATE INDEX email_change_links_expires ON email_change_links (expires_at);
    CREATE TABLE org_invitations (
        id           TEXT NOT NULL PRIMARY KEY,
        org_id       TEXT NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
        customer_id  TEXT NOT NULL,
        role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'developer', 'restricted')),
        invited_by   TEXT NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
        created_at   REAL NOT NULL,
        expires_at   REAL NOT NULL,
        UNIQUE (org_id, customer_id)
    );
    CREATE INDEX org_invitations_customer ON org_invitations (customer_id);
    CREATE INDEX org_invitations_invited_by ON org_invitations (invited_by);
    CREATE INDEX org_invitations_expires ON org_invitations (expires_at);
    """,
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
