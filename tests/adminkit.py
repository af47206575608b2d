"""Helpers for admin API, audit and GDPR tests: a Kraken with its admin listener enabled."""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from harness import free_port, http, kraken_mapping, running_kraken, running_mock


@dataclass
class Member:
    """A customer and one of its keys as a test holds them (the plaintext shown once)."""
    customer_id: str
    key_id: str
    secret: str

from kraken.admin.token import hash_token

ADMIN_TOKEN = "kradm_" + "T" * 43
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def admin_doc(tmp: Path, mock_port: int, admin_port: int, **sections: Any) -> dict[str, Any]:
    admin = {"port": admin_port, "token_hash": hash_token(ADMIN_TOKEN), **sections.pop("admin", {})}
    return kraken_mapping(tmp, mock_port, admin=admin, **sections)


class Admin:
    """A client of the admin API on ``port``."""

    def __init__(self, port: int, db_path: Path):
        self.port = port
        self.db_path = db_path

    async def call(self, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None):
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        hdrs = {**BEARER, "content-type": "application/json", **(headers or {})}
        return await http(self.port, method, path, raw, hdrs)

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        reply = await self.call(method, path, body)
        assert reply.status == status, (reply.status, reply.body)
        return reply.json()

    async def customer(self, email: str | None = None, name: str | None = "Test Person") -> dict:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        return await self.ok("POST", "/admin/customers", {"email": email, "name": name}, 201)


@contextlib.asynccontextmanager
async def admin_kraken(tmp: Path, **sections: Any) -> AsyncIterator[tuple[Admin, Any]]:
    """(admin client, running Kraken) with a mock provider behind it."""
    async with running_mock() as mock:
        port = free_port()
        async with running_kraken(admin_doc(tmp, mock.port, port, **sections)) as k:
            yield Admin(port, k.db_path), k


async def insert_requests(*args: Any, **kw: Any) -> list[str]:
    """Request metadata rows written with plain sqlite3 (as the meter would), in a thread: an
    in-process Kraken runs in this event loop, and a blocking wait for its write lock here
    would keep it from releasing it."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(lambda: _insert_requests(*args, **kw))


def _insert_requests(db_path: Path, customer_id: str | None, n: int, *, start_ts: float | None = None,
                    model: str = "mock-gpt", latency: Any = None, error_every: int = 0,
                    prefix: str = "req") -> list[str]:
    """Request metadata rows written with plain sqlite3 (as the meter would)."""
    start_ts = time.time() - 3600 if start_ts is None else start_ts
    # BEGIN IMMEDIATE: take the write lock up front (waiting on busy) rather than upgrading a
    # read snapshot, which fails at once if the running Kraken wrote in between.
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    ids = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for i in range(n):
            rid = f"{prefix}_{uuid.uuid4().hex}"
            ids.append(rid)
            lat = latency(i) if callable(latency) else float(10 + i)
            err = "upstream_error" if error_every and i % error_every == 0 else None
            conn.execute(
                "INSERT INTO requests (ts, request_id, customer_id, model_requested, "
                "model_dispatched, provider, prompt_tokens, completion_tokens, latency_ms, "
                "cost_usd, kraken_fee_usd, fallback_used, error_type, status) "
                "VALUES (?, ?, ?, ?, ?, 'mockai', 10, 5, ?, 0.001, 0.0001, 0, ?, ?)",
                (start_ts + i, rid, customer_id, model, model, lat, err,
                 502 if err else 200))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return ids
