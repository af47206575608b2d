"""Every CLI command that reads or writes the store works against either backend from the same
config: only ``[store]`` differs. Each runs as an operator runs it (a subprocess), in the order
an operator would use them on a fresh install."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from kraken.accounts.masterkey import new_entry
from postgres_server import pg_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def config(request, tmp_path) -> Path:
    if request.param == "sqlite":
        store = f'path = "{tmp_path / "k.db"}"'
    else:
        server = request.getfixturevalue("pg_server")
        store = f'backend = "postgres"\ndsn = "{server.create_database()}"'
    path = tmp_path / "k.toml"
    path.write_text(f"[store]\n{store}\n")
    return path


async def kraken(config: Path, *argv: str, stdin: str = "", env: dict | None = None
                 ) -> subprocess.CompletedProcess:
    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kraken", *argv, "--config", str(config)],
                              input=stdin, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})
    done = await anyio.to_thread.run_sync(run)
    assert done.returncode == 0, (argv, done.stderr)
    return done


async def test_every_store_command_on_both_backends(config, tmp_path):
    cus = json.loads((await kraken(config, "customers", "create", "--email", "ops@example.com",
                                   "--name", "Ops", "--json")).stdout)[0]
    cid = cus["id"]
    await kraken(config, "customers", "update", cid, "--name", "Ops Team")
    shown = json.loads((await kraken(config, "customers", "show", cid, "--json")).stdout)[0]
    assert shown["name"] == "Ops Team"
    assert cid in (await kraken(config, "customers", "list")).stdout

    made = await kraken(config, "keys", "create", "--customer", cid, "--rounds", "4")
    secret = made.stdout.rsplit(": ", 1)[1].strip()
    keys = json.loads((await kraken(config, "keys", "list", "--json")).stdout)
    assert [k["customer_id"] for k in keys] == [cid]
    await kraken(config, "keys", "revoke", keys[0]["id"])
    assert (await kraken(config, "keys", "list", "--active", "--json")).stdout.strip() == "[]"
    await kraken(config, "keys", "delete", keys[0]["id"])

    await kraken(config, "wallet", "topup", cid, "12.50", "--ref", "inv-1")
    await kraken(config, "wallet", "topup", cid, "12.50", "--ref", "inv-1")  # idempotent
    assert "12.500000" in (await kraken(config, "wallet", "balance", cid)).stdout
    assert "inv-1" in (await kraken(config, "wallet", "transactions", cid)).stdout

    env = {"KRAKEN_BYOK_MASTER_KEY": new_entry(1)}
    await kraken(config, "byok", "set", cid, "openai", stdin="sk-customer-own-key\n", env=env)
    listed = json.loads((await kraken(config, "byok", "list", "--json", env=env)).stdout)
    assert [(e["customer_id"], e["provider"]) for e in listed] == [(cid, "openai")]
    await kraken(config, "byok", "rotate", env=env)
    await kraken(config, "byok", "delete", cid, "openai", env=env)

    usage = json.loads((await kraken(config, "usage", "--customer", cid, "--json")).stdout)
    assert usage == []
    exported = (await kraken(config, "export", cid)).stdout
    assert "ops@example.com" in exported and "sk-customer-own-key" not in exported

    said = (await kraken(config, "erase", cid, "--yes")).stdout
    if 'backend = "postgres"' in config.read_text():  # no WAL step of Kraken's: what stays
        assert "WAL truncated" not in said and "dead tuples" in said and "pg_dump" in said
    else:
        assert "WAL truncated: yes" in said
    gone = subprocess.run([sys.executable, "-m", "kraken", "customers", "show", cid,
                           "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and "customer_id" in gone.stderr

    audit = json.loads((await kraken(config, "audit", "list", "--json")).stdout)
    actions = [e["action"] for e in audit]
    for action in ("customer.create", "key.create", "key.revoke", "key.delete", "byok.set",
                   "byok.delete", "customer.export", "customer.erase"):
        assert action in actions, actions
    assert "ok" in (await kraken(config, "audit", "verify")).stdout.lower()
    assert secret not in json.dumps(audit)
