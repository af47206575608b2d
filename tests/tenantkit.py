"""Helpers for the file and batch ownership tests: customers, each with its own key, through a
real Kraken (real sockets, real SQLite) in front of the mock provider holding every file and
batch in one account."""
from __future__ import annotations

import contextlib
import json

import openai
from adminkit import admin_doc
from harness import free_port, running_kraken, running_mock

from kraken.accounts import service
from kraken.store.sqlite import SqliteStore

LINES = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
          "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
         for i in range(2)]
JSONL = b"".join(json.dumps(line).encode() + b"\n" for line in LINES)
"""A batch's input file."""
BATCH = {"endpoint": "/v1/chat/completions", "completion_window": "24h"}


async def new_customer(store, label: str) -> tuple[str, str]:
    """A customer and one of its keys: (id, plaintext key)."""
    cid = (await service.create_customer(store, f"{label}@example.com", label)).id
    return cid, (await service.create_key(store, cid, rounds=4)).plaintext


@contextlib.asynccontextmanager
async def kraken_with(tmp_path, *labels: str, admin_port: int | None = None, **admin):
    """The mock as an OpenAI provider behind a real Kraken, and one customer (id, key) per
    label, made in its store."""
    async with running_mock() as mock:
        doc = admin_doc(tmp_path, mock.port, admin_port or free_port(), **admin)
        doc["providers"]["mockai"].update({"kind": "openai", "models": ["gpt-4o-mini"]})
        async with running_kraken(doc) as k:
            store = await SqliteStore.open(str(k.db_path))
            try:
                tenants = [await new_customer(store, label) for label in labels]
            finally:
                await store.close()
            yield mock, k, tenants


def sdk_client(port: int, key: str, **options) -> openai.AsyncOpenAI:
    """The real OpenAI SDK pointed at Kraken (no retries unless ``options`` say so)."""
    return openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key,
                              **{"max_retries": 0, **options})
