"""Bad input: SQL metacharacters, NUL, control characters and Unicode through every admin
text field, query parameter, path segment and header. Each is stored verbatim or refused
with a 4xx naming the field; nothing is ever a 500, and every table survives."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from urllib.parse import quote

import pytest
from adminkit import ADMIN_TOKEN, admin_kraken, insert_requests
from harness import write_toml

from kraken.accounts.masterkey import new_entry

pytestmark = pytest.mark.anyio

NASTY = [
    "'; DROP TABLE customers;--",
    '" OR 1=1 --',
    "Robert'); DELETE FROM audit_log; --",
    "x\x00y",
    "\x00",
    "line\nbreak",
    "名前 Zoë 😀 Ünïcödé",
    "\u202eevil",
    "%00%27",
    "\\' OR '1'='1",
    "a" * 5000,
]


def _tables(db) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


def _check(reply, field: str, stored=None, value=None):
    """Either accepted (and then stored as given, trimmed) or a 4xx naming ``field``."""
    assert reply.status < 500, (field, value, reply.status, reply.body)
    if reply.status >= 400:
        err = reply.json()["error"]
        assert err["param"] == field or (reply.status == 404 and err["code"] == "not_found"), \
            (field, value, reply.body)
        return False
    if stored is not None:
        assert stored(reply.json()) == value.strip(), (field, value)
    return True


async def test_sql_metacharacters_through_every_text_field(tmp_path):
    keyring = tmp_path / "byok.keyring"
    keyring.write_text(new_entry(1) + "\n")
    os.chmod(keyring, 0o600)
    async with admin_kraken(tmp_path, byok={"master_key_file": str(keyring)}) as (admin, k):
        owner = await admin.customer()
        org = await admin.ok("POST", "/admin/organisations", {"name": "o", "owner_id": owner["id"]}, 201)
        key = (await admin.ok("POST", "/admin/keys", {"customer_id": owner["id"]}, 201))["key"]
        await insert_requests(k.db_path, owner["id"], 3)
        tables = _tables(k.db_path)
        accepted = 0
        for value in NASTY:
            # names: accepted verbatim (trimmed) unless they hold control characters or are too long
            r = await admin.call("POST", "/admin/customers",
                                 {"email": f"u{accepted}x{len(value)}@example.com", "name": value})
            if _check(r, "name", lambda j: j["name"], value):
                accepted += 1
                got = await admin.ok("GET", f"/admin/customers/{r.json()['id']}")
                assert got["name"] == value.strip()
            r = await admin.call("PATCH", f"/admin/customers/{owner['id']}", {"name": value})
            _check(r, "name", lambda j: j["name"], value)
            r = await admin.call("POST", "/admin/customers", {"email": value})
            _check(r, "email")
            assert r.status == 400
            r = await admin.call("PATCH", f"/admin/organisations/{org['id']}", {"name": value})
            _check(r, "name", lambda j: j["name"], value)
            r = await admin.call("PATCH", f"/admin/keys/{key['id']}", {"name": value})
            _check(r, "name", lambda j: j["name"], value)
            r = await admin.call("PATCH", f"/admin/keys/{key['id']}", {"allowed_models": [value]})
            _check(r, "allowed_models[0]", lambda j: j["allowed_models"][0], value)
            r = await admin.call("POST", f"/admin/organisations/{org['id']}/members",
                                 {"customer_id": owner["id"], "role": value})
            _check(r, "role")
            assert r.status == 400
            for body, field in (({"customer_id": value}, "customer_id"),
                                ({"name": value, "owner_id": value}, None),
                                ({value[:60]: 1}, value[:60])):
                path = "/admin/keys" if "customer_id" in body else (
                    "/admin/organisations" if "owner_id" in body else "/admin/customers")
                r = await admin.call("POST", path, body)
                assert 400 <= r.status < 500, (path, value, r.body)
            # path segments and query parameters
            seg = quote(value, safe="")
            for path in (f"/admin/customers/{seg}", f"/admin/keys/{seg}",
                         f"/admin/organisations/{seg}", f"/admin/customers/{seg}/export"):
                r = await admin.call("GET", path)
                assert r.status in (400, 404), (path, r.status, r.body)
            for param in ("customer", "key", "model", "group_by", "from", "to"):
                r = await admin.call("GET", f"/admin/usage?{param}={seg}")
                assert r.status < 500, (param, value, r.body)
                if r.status >= 400:
                    assert r.json()["error"]["param"] == param, (param, value, r.body)
            r = await admin.call("GET", f"/admin/usage?model={seg}")
            if r.status == 200:
                assert r.json()["data"] == []  # matched literally, nothing injected
            r = await admin.call("GET", f"/admin/customers/{owner['id']}/export?format={seg}")
            assert r.status == 400 and r.json()["error"]["param"] == "format"
            # BYOK: the provider is a fixed list; a key with spaces or NULs is refused.
            r = await admin.call("PUT", f"/admin/customers/{owner['id']}/byok/{seg}", {"api_key": "sk-x" * 5})
            assert r.status in (400, 404) and r.json()["error"]["param"] == "provider", r.body
            r = await admin.call("PUT", f"/admin/customers/{owner['id']}/byok/openai", {"api_key": value})
            _check(r, "api_key")  # printable ASCII is a possible key (stored encrypted)
            assert value.encode() not in r.body or len(value) < 3
            # Wallet references are free text: stored verbatim or refused naming ref.
            r = await admin.call("POST", f"/admin/customers/{owner['id']}/wallet",
                                 {"amount_usd": "1", "ref": value})
            if _check(r, "ref"):
                assert r.json()["ref"] == value
            r = await admin.call("POST", f"/admin/customers/{owner['id']}/wallet",
                                 {"amount_usd": value, "ref": "r"})
            assert r.status == 400 and r.json()["error"]["param"] == "amount_usd", r.body
        assert accepted >= 4  # the quote and unicode names were stored, not refused
        # The tables, their rows and the audit chain are all intact.
        assert _tables(k.db_path) == tables
        conn = sqlite3.connect(k.db_path)
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 3
        conn.close()
        assert (await admin.ok("GET", "/admin/audit/verify"))["ok"] is True


async def _raw(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    return data


async def test_sql_metacharacters_in_the_authorization_and_actor_headers(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        tables = _tables(k.db_path)
        for value in NASTY[:3] + ["名前", "' OR ''='"]:
            for header in (f"Bearer {value}", value, f"Bearer {ADMIN_TOKEN}{value}"):
                r = await admin.call("GET", "/admin/customers",
                                     headers={"Authorization": header.encode("utf-8")})
                assert r.status == 401 and value.encode() not in r.body
            r = await admin.call("GET", "/admin/customers", headers={
                "x-kraken-actor": value.encode("utf-8")})
            assert r.status == 400 and r.json()["error"]["param"] == "x-kraken-actor"
        # NUL and CR inside the header never reach the app: the HTTP layer answers 400.
        for bad in (b"Bearer \x00", b"Bearer x\x00'; DROP TABLE customers;--"):
            out = await _raw(admin.port, b"GET /admin/customers HTTP/1.1\r\nHost: a\r\n"
                                         b"Authorization: " + bad + b"\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 400")
        assert _tables(k.db_path) == tables


def _kraken(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", *args], capture_output=True,
                          text=True, timeout=60)


async def test_cli_inputs_are_validated_naming_the_option(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        await insert_requests(k.db_path, cus["id"], 2)
        db = k.db_path
    cfg = tmp_path / "cli.toml"
    write_toml(cfg, {"store": {"path": str(db)}})
    tables = _tables(db)
    for value in (NASTY[0], NASTY[1], "名前 😀"):
        out = _kraken("usage", "--config", str(cfg), "--customer", value)
        assert out.returncode == 2 and "--customer" in out.stderr
        out = _kraken("usage", "--config", str(cfg), "--model", value, "--json")
        assert out.returncode == 0 and out.stdout.strip() == "[]"
        out = _kraken("usage", "--config", str(cfg), "--from", value)
        assert out.returncode == 2 and "--from" in out.stderr
        out = _kraken("usage", "--config", str(cfg), "--group-by", value)
        assert out.returncode == 2 and "--group-by" in out.stderr
        out = _kraken("export", value, "--config", str(cfg))
        assert out.returncode == 2 and "customer" in out.stderr
        out = _kraken("erase", value, "--yes", "--config", str(cfg))
        assert out.returncode == 2 and "customer" in out.stderr
    out = _kraken("usage", "--config", str(cfg), "--group-by", "model")
    assert out.returncode == 0 and "mock-gpt" in out.stdout and "requests" in out.stdout
    assert _tables(db) == tables


async def test_huge_numbers_in_query_parameters_are_400_naming_them(tmp_path):
    """A number past what the database stores (2^63) is refused by the route, not left to
    overflow in the driver (a 500 and a traceback in the log)."""
    huge = "9" * 20
    async with admin_kraken(tmp_path) as (admin, _):
        cus = await admin.customer()
        wallet = f"/admin/customers/{cus['id']}/wallet"
        for path, param in ((f"{wallet}?before={huge}", "before"),
                            (f"{wallet}?limit={huge}", "limit"),
                            (f"/admin/audit?after={huge}", "after"),
                            (f"/admin/audit?limit={huge}", "limit"),
                            (f"/admin/keys?limit={huge}", "limit")):
            r = await admin.call("GET", path)
            assert r.status == 400 and r.json()["error"]["param"] == param, (path, r.body)
        assert (await admin.ok("GET", f"{wallet}?before={2**63 - 1}"))["transactions"] == []


async def test_a_busy_database_is_503_with_retry_after_not_a_500(tmp_path):
    """Another writer holding SQLite's lock past the busy timeout (an operator's sqlite3 shell,
    a long CLI command) is not Kraken's fault: 503 store_busy with Retry-After, nothing
    changed; the same call succeeds once the lock is released."""
    async with admin_kraken(tmp_path, store={"busy_timeout_ms": 100}) as (admin, k):
        holder = sqlite3.connect(k.db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            busy = await admin.call("POST", "/admin/customers", {"email": "b@example.com"})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.status == 503, busy.body
        assert busy.headers["retry-after"] == "1"
        assert (busy.json()["error"]["code"], busy.json()["error"]["type"]) == (
            "store_busy", "server_error")
        assert (await admin.ok("GET", "/admin/customers"))["data"] == []
        await admin.ok("POST", "/admin/customers", {"email": "b@example.com"}, 201)
