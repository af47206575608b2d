"""Two (or more) Kraken "hosts" on one PostgreSQL and one Redis: each a real ``kraken serve``
process with its own ports, admin listener and crash journal, as separate machines would run.

The provider is one local mock (kind ``openai``, priced, so requests are billed and BYOK
applies); the hosts reach it and each other's state only through PostgreSQL and Redis.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import asyncpg

from adminkit import Admin, admin_doc
from harness import PROVIDER_KEY, KrakenProcess, Reply, free_port, http, write_toml

SALT = "two-hosts-test-salt-0123456789"
PRICE = {"input": 2.0, "output": 8.0}
"""USD per 1M tokens for mock-gpt: every request costs the customer something."""


@dataclass
class Host:
    name: str
    process: KrakenProcess
    admin: Admin
    config_path: Path

    @property
    def port(self) -> int:
        return self.process.port


def host_doc(tmp: Path, name: str, dsn: str, redis_url: str, mock_port: int,
             **sections: Any) -> dict[str, Any]:
    doc = admin_doc(tmp, mock_port, free_port(), server={"port": free_port()}, **sections)
    doc["keys"] = []  # every key lives in the shared database
    doc["store"] = {"backend": "postgres", "dsn": dsn, "pool_size": 4,
                    "journal_dir": str(tmp / f"{name}.journal")}
    doc["limits"] = {"backend": "redis", "redis_url": redis_url, "ip_salt": SALT,
                     "ip_auth_failures": 100_000, **sections.get("limits", {})}
    doc["providers"] = {"openai": {"kind": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1",
                                   "api_key": PROVIDER_KEY, "models": ["mock-gpt"],
                                   "read_timeout_s": 10.0, "connect_timeout_s": 2.0}}
    doc["prices"] = {"openai": {"mock-gpt": PRICE}}
    return doc


@contextlib.asynccontextmanager
async def hosts(tmp: Path, dsn: str, redis_url: str, mock_port: int, n: int = 2,
                **sections: Any) -> AsyncIterator[list[Host]]:
    """``n`` hosts started at the same moment (they race to migrate the empty database)."""
    made: list[Host] = []
    for i in range(n):
        name = "host" + "ABCDEFGH"[i]
        doc = host_doc(tmp, name, dsn, redis_url, mock_port, **sections)
        path = tmp / f"{name}.toml"
        write_toml(path, doc)
        proc = KrakenProcess(path, doc["server"]["port"], tmp / f"{name}.log")
        made.append(Host(name, proc, Admin(doc["admin"]["port"], None), path))
    try:
        async with anyio.create_task_group() as tg:
            for host in made:
                tg.start_soon(anyio.to_thread.run_sync, host.process.start, 60.0)
        yield made
    finally:
        for host in made:
            host.process.kill()


async def chat(host: Host, key: str, **body: Any) -> Reply:
    doc = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], **body}
    return await http(host.port, "POST", "/v1/chat/completions", json.dumps(doc).encode(),
                      {"Authorization": f"Bearer {key}", "content-type": "application/json"})


async def new_key(host: Host, customer_id: str, **limits: Any) -> tuple[str, str]:
    """(secret, key id) of a key made through ``host``'s admin API."""
    made = await host.admin.ok("POST", "/admin/keys", {"customer_id": customer_id, **limits}, 201)
    return made["secret"], made["key"]["id"]


async def status_within(host: Host, key: str, want: int, seconds: float = 1.0) -> None:
    """A request sent to ``host`` within ``seconds`` of now is answered ``want`` (polled).

    The bound is on when the request is *sent*, not on when its answer arrives: what is
    promised is that the change has reached the other host within a second; the request's own
    time (a first bcrypt check of a new key on a loaded machine) is not propagation delay.
    Each request is bounded by ``http``'s own timeout, so the loop ends by itself.
    """
    deadline = anyio.current_time() + seconds
    last = None
    while anyio.current_time() <= deadline:
        if (last := (await chat(host, key)).status) == want:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"{host.name} still answered {last}, not {want}, {seconds}s after the change")


async def cli(host: Host, *argv: str, stdin: str = "", env: dict | None = None
              ) -> subprocess.CompletedProcess:
    """``kraken <argv> --config <host's config>`` as an operator on that host runs it."""
    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kraken", *argv, "--config",
                               str(host.config_path)], input=stdin, capture_output=True,
                              text=True, timeout=60, env={**os.environ, **(env or {})})
    return await anyio.to_thread.run_sync(run)


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows read from the shared database on a connection of the test's own (an observer)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()
