"""BYOK end to end: a real Kraken in front of the mock provider, keys managed with the real
``kraken byok`` CLI in another process. The mock records the credential it received."""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from pathlib import Path

import anyio
import orjson
import pytest
from harness import (
    write_db,
    PROVIDER_KEY,
    auth_headers,
    db_rows,
    http,
    running_kraken,
    wait_for,
    write_toml,
)

from kraken.accounts import byok, masterkey, service
from kraken.accounts.keys import generate_key, hash_key
from kraken.mock.anthropic_mock import MockAnthropic
from kraken.mock.openai_mock import MockOpenAI
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

BYOK_SECRET = "sk-customer-own-BYOK-9e41d07c55aa3b2f"
KEY_A = generate_key("byoka", env="test")
KEY_B = generate_key("byokb", env="test")
REPO = Path(__file__).resolve().parents[2]
BODY = orjson.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})


async def make_customers(db: Path) -> tuple[str, str]:
    store = await SqliteStore.open(str(db))
    try:
        a = await service.create_customer(store, "a@example.com")
        b = await service.create_customer(store, "b@example.com")
        return a.id, b.id
    finally:
        await store.close()


def document(tmp: Path, mock_port: int, a: str, b: str, key_file: Path) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp / "kraken.db")},
        "meter": {"flush_interval_ms": 20},
        "byok": {"master_key_file": str(key_file), "poll_interval_s": 0.25},
        "fees": {"managed_pct": 5, "byok_pct": 0},
        "keys": [{"id": "byoka", "hash": hash_key(KEY_A, rounds=4), "customer_id": a},
                 {"id": "byokb", "hash": hash_key(KEY_B, rounds=4), "customer_id": b}],
        "providers": {"openai": {"kind": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1",
                                 "api_key": PROVIDER_KEY, "models": ["mock-gpt"],
                                 "read_timeout_s": 5.0, "connect_timeout_s": 2.0}},
        "prices": {"openai": {"mock-gpt": {"input": 2.0, "output": 8.0}}},
    }


async def cli(config: Path, *args: str, stdin: bytes = b"") -> tuple[int, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "kraken", "byok", *args, "--config", str(config)],
        input=stdin, check=False, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    out = (result.stdout + result.stderr).decode()
    assert BYOK_SECRET not in out
    return result.returncode, result.stdout.decode()


async def chat(port: int, key: str):
    reply = await http(port, "POST", "/v1/chat/completions", BODY,
                       {**auth_headers(key), "content-type": "application/json"})
    assert BYOK_SECRET.encode() not in reply.body
    return reply


def upstream_credential(mock: MockOpenAI) -> bytes:
    return mock.requests[-1].header(b"authorization")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def assert_secret_not_on_disk(tmp: Path) -> None:
    for path in tmp.rglob("*"):
        if path.is_file():
            assert BYOK_SECRET.encode() not in path.read_bytes(), path


async def test_byok_key_used_for_its_customer_only_and_dropped_on_delete(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    key_file = tmp_path / "master.keys"
    key_file.write_text(masterkey.new_entry(1) + "\n")
    key_file.chmod(0o600)
    a, b = await make_customers(tmp_path / "kraken.db")
    async with MockOpenAI(api_key=PROVIDER_KEY) as mock:
        mock.accept_key(BYOK_SECRET)
        doc = document(tmp_path, mock.port, a, b, key_file)
        config = tmp_path / "kraken.toml"
        write_toml(config, doc)
        async with running_kraken(doc) as k:
            assert (await chat(k.port, KEY_A)).status == 200
            assert upstream_credential(mock) == b"Bearer " + PROVIDER_KEY.encode()

            code, out = await cli(config, "set", a, "openai", "--json",
                                  stdin=BYOK_SECRET.encode() + b"\n")
            assert code == 0 and json.loads(out)["key_version"] == 1

            async def uses_byok() -> bool:
                reply = await chat(k.port, KEY_A)
                return reply.status == 200 and upstream_credential(mock) == b"Bearer " + BYOK_SECRET.encode()

            with anyio.fail_after(1):  # a set in another process takes effect within 1 s
                while not await uses_byok():
                    await anyio.sleep(0.02)
            metrics = (await http(k.port, "GET", "/metrics")).body.decode()
            hits = metric(metrics, 'kraken_byok_cache_total{outcome="hit"}')
            assert (await chat(k.port, KEY_A)).status == 200
            assert upstream_credential(mock) == b"Bearer " + BYOK_SECRET.encode()
            metrics = (await http(k.port, "GET", "/metrics")).body.decode()
            assert metric(metrics, 'kraken_byok_cache_total{outcome="hit"}') == hits + 1
            assert metric(metrics, "kraken_byok_cache_entries") >= 1

            assert (await chat(k.port, KEY_B)).status == 200  # other customers: managed key
            assert upstream_credential(mock) == b"Bearer " + PROVIDER_KEY.encode()

            code, out = await cli(config, "list")
            assert code == 0 and a in out and "openai" in out

            code, _ = await cli(config, "delete", a, "openai")
            assert code == 0
            with anyio.fail_after(1):  # managed access again within 1 s
                while True:
                    assert (await chat(k.port, KEY_A)).status == 200
                    if upstream_credential(mock) == b"Bearer " + PROVIDER_KEY.encode():
                        break
                    await anyio.sleep(0.02)
            n = len(mock.requests)
            rows = await wait_for(lambda: r if len(r := db_rows(k.db_path)) >= n else None)
    by_customer = {}
    for row in rows:
        by_customer.setdefault((row["customer_id"], row["byok"]), []).append(row)
    byok_rows = by_customer[(a, 1)]
    assert byok_rows and all(r["cost_usd"] > 0 and r["kraken_fee_usd"] == 0 for r in byok_rows)
    managed = by_customer[(b, 0)] + by_customer[(a, 0)]
    assert all(r["kraken_fee_usd"] == pytest.approx(r["cost_usd"] * 0.05) for r in managed)
    assert rows[-1]["customer_id"] == a and rows[-1]["byok"] == 0  # after delete
    assert (b, 1) not in by_customer
    assert BYOK_SECRET not in caplog.text
    assert_secret_not_on_disk(tmp_path)


async def test_swapped_ciphertext_is_refused_and_rotation_keeps_keys_usable(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    v1, v2 = masterkey.new_entry(1), masterkey.new_entry(2)
    key_file = tmp_path / "master.keys"
    key_file.write_text(v1 + "\n")
    key_file.chmod(0o600)
    a, b = await make_customers(tmp_path / "kraken.db")
    async with MockOpenAI(api_key=PROVIDER_KEY) as mock:
        mock.accept_key(BYOK_SECRET)
        doc = document(tmp_path, mock.port, a, b, key_file)
        config = tmp_path / "kraken.toml"
        write_toml(config, doc)
        code, _ = await cli(config, "set", a, "openai", stdin=BYOK_SECRET.encode())
        assert code == 0
        async with running_kraken(doc) as k:
            assert (await chat(k.port, KEY_A)).status == 200
            assert upstream_credential(mock) == b"Bearer " + BYOK_SECRET.encode()
            # An attacker with write access copies A's ciphertext to B: it must not decrypt.
            await write_db(tmp_path / "kraken.db",
                           "INSERT INTO byok_keys SELECT ?, provider, key_version, nonce,"
                           " ciphertext, created_at, updated_at FROM byok_keys"
                           " WHERE customer_id = ?", (b, a))
            seen = len(mock.requests)

            async def refused() -> bool:
                reply = await chat(k.port, KEY_B)
                return reply.status == 503 and reply.json()["error"]["code"] == "byok_unavailable"

            with anyio.fail_after(1):
                while not await refused():
                    await anyio.sleep(0.02)
            assert all(r.header(b"authorization") != b"Bearer " + BYOK_SECRET.encode()
                       for r in list(mock.requests)[seen:] if r.index >= seen)
            await write_db(tmp_path / "kraken.db",
                           "DELETE FROM byok_keys WHERE customer_id = ?", (b,))

        # Rotation: add version 2, re-encrypt, remove version 1, restart.
        key_file.write_text(f"{v1}\n{v2}\n")
        code, out = await cli(config, "rotate", "--json")
        assert code == 0
        assert json.loads(out) == {"newest_version": 2, "rotated": 1, "already_current": 0,
                                   "before": {"1": 1}}
        key_file.write_text(v2 + "\n")
        conn = sqlite3.connect(tmp_path / "kraken.db")
        assert conn.execute("SELECT key_version FROM byok_keys").fetchall() == [(2,)]
        conn.close()
        async with running_kraken(doc) as k:
            assert (await chat(k.port, KEY_A)).status == 200
            assert upstream_credential(mock) == b"Bearer " + BYOK_SECRET.encode()
    assert BYOK_SECRET not in caplog.text
    assert_secret_not_on_disk(tmp_path)


async def test_cli_refuses_a_key_on_bad_input_without_echoing_it(tmp_path):
    key_file = tmp_path / "master.keys"
    key_file.write_text(masterkey.new_entry(1) + "\n")
    key_file.chmod(0o600)
    a, b = await make_customers(tmp_path / "kraken.db")
    config = tmp_path / "kraken.toml"
    write_toml(config, document(tmp_path, 9, a, b, key_file))
    code, _ = await cli(config, "set", a, "mistral-typo", stdin=BYOK_SECRET.encode())
    assert code == 2
    code, _ = await cli(config, "set", "cus_missing", "openai", stdin=BYOK_SECRET.encode())
    assert code == 2
    key_file.chmod(0o644)
    code, _ = await cli(config, "list")
    assert code == 2
    assert_secret_not_on_disk(tmp_path)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
async def test_byok_key_reaches_anthropic_natively_and_through_translation(tmp_path, path):
    key_file = tmp_path / "master.keys"
    key_file.write_text(masterkey.new_entry(1))
    key_file.chmod(0o600)
    a, b = await make_customers(tmp_path / "kraken.db")
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    keyring = masterkey.load(str(key_file), "")
    await byok.set_key(store, keyring, a, "anthropic", BYOK_SECRET)
    await store.close()
    async with MockAnthropic() as mock:  # accepts any key; records what it got
        doc = document(tmp_path, 9, a, b, key_file)
        doc["providers"]["claude"] = {"kind": "anthropic", "base_url": mock.url,
                                      "api_key": PROVIDER_KEY, "models": ["claude-test"]}
        doc["prices"]["anthropic"] = {"claude-test": {"input": 3.0, "output": 15.0}}
        body = orjson.dumps({"model": "claude-test", "max_tokens": 64,
                             "messages": [{"role": "user", "content": "hi"}]})
        async with running_kraken(doc) as k:
            for key, expected in ((KEY_A, BYOK_SECRET), (KEY_B, PROVIDER_KEY)):
                reply = await http(k.port, "POST", path, body,
                                   {"x-api-key": key, "anthropic-version": "2023-06-01",
                                    "content-type": "application/json"})
                assert reply.status == 200, reply.body
                assert BYOK_SECRET.encode() not in reply.body
                assert mock.requests[-1].header(b"x-api-key") == expected.encode()
                assert mock.requests[-1].header(b"authorization") is None
            rows = await wait_for(lambda: r if len(r := db_rows(k.db_path)) >= 2 else None)
    assert {(r["customer_id"], r["byok"]) for r in rows} == {(a, 1), (b, 0)}
    assert_secret_not_on_disk(tmp_path)


async def test_a_customers_rejected_key_is_its_own_401_and_opens_no_circuit_for_others(tmp_path):
    """The provider refusing one customer's own key says nothing about the provider: it must not
    open the circuit that every other customer's requests go through."""
    key_file = tmp_path / "master.keys"
    key_file.write_text(masterkey.new_entry(1))
    key_file.chmod(0o600)
    a, b = await make_customers(tmp_path / "kraken.db")
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    await byok.set_key(store, masterkey.load(str(key_file), ""), a, "openai", BYOK_SECRET)
    await store.close()
    async with MockOpenAI(api_key=PROVIDER_KEY) as mock:  # refuses the customer's key: 401
        doc = document(tmp_path, mock.port, a, b, key_file)
        doc["routing"] = {"breaker_failures": 2, "breaker_cooldown_s": 300}
        async with running_kraken(doc) as k:
            for _ in range(3):
                reply = await chat(k.port, KEY_A)
                assert reply.status == 401, reply.body
                error = reply.json()["error"]
                assert error["code"] == "byok_key_rejected" and "your own" in error["message"]
            assert upstream_credential(mock) == b"Bearer " + BYOK_SECRET.encode()
            reply = await chat(k.port, KEY_B)
            assert reply.status == 200, reply.body
            metrics = (await http(k.port, "GET", "/metrics")).body.decode()
            assert metric(metrics, 'kraken_circuit_state{provider="openai"}') == 0
            rows = await wait_for(lambda: r if len(r := db_rows(k.db_path)) >= 4 else None)
    assert [(r["customer_id"], r["status"], r["error_type"]) for r in rows] == [
        (a, 401, "byok_key_rejected")] * 3 + [(b, 200, None)]
    assert_secret_not_on_disk(tmp_path)
