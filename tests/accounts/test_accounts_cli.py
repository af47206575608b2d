"""``kraken customers …`` and ``kraken keys create|list|revoke|delete`` as an operator runs them:
errors name the field, the secret is printed once and stored nowhere, changes are audited."""
from __future__ import annotations

import json
import sqlite3

import pytest

from keyproc import cli


async def cli_plain(*argv: str):
    import subprocess
    import sys

    import anyio

    return await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "kraken", *argv], capture_output=True, text=True, timeout=60))

pytestmark = pytest.mark.anyio


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "k.db"}"\n')
    return path


async def test_customer_commands_validate_and_rectify(config, tmp_path):
    bad = await cli(config, "customers", "create", "--email", "not-an-address")
    assert bad.returncode == 2 and bad.stderr.startswith("kraken: email: ")
    made = await cli(config, "customers", "create", "--email", "Ada@Example.COM", "--name",
                     "Ada'); DROP TABLE customers;--", "--json")
    assert made.returncode == 0, made.stderr
    cus = json.loads(made.stdout)[0]
    assert (cus["email"], cus["name"]) == ("Ada@example.com", "Ada'); DROP TABLE customers;--")
    dup = await cli(config, "customers", "create", "--email", "ada@example.com")
    assert dup.returncode == 2 and "email: is already used" in dup.stderr
    nothing = await cli(config, "customers", "update", cus["id"])
    assert nothing.returncode == 2
    fixed = await cli(config, "customers", "update", cus["id"], "--email", "ada@new.example",
                      "--name", "", "--opt-out", "--json")
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)[0] | {"created_at": 0} == {
        "id": cus["id"], "email": "ada@new.example", "name": None, "plan": "default",
        "opted_out": True, "created_at": 0}
    table = await cli(config, "customers", "list")
    assert cus["id"] in table.stdout and "ada@new.example" in table.stdout
    missing = await cli(config, "customers", "show", "cus_nope")
    assert missing.returncode == 2 and "customer_id" in missing.stderr


async def test_key_commands(config, tmp_path):
    cus = json.loads((await cli(config, "customers", "create", "--email", "k@example.com",
                                "--json")).stdout)[0]
    bad = await cli(config, "keys", "create", "--customer", cus["id"], "--rpm", "-1")
    assert bad.returncode == 2 and bad.stderr.startswith("kraken: rpm: ")
    past = await cli(config, "keys", "create", "--customer", cus["id"], "--expires", "2001-01-01")
    assert past.returncode == 2 and "expires_at" in past.stderr
    made = await cli(config, "keys", "create", "--customer", cus["id"], "--rounds", "4",
                     "--models", "mock-gpt,fast", "--expires", "2099-01-01T00:00:00")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.rsplit(": ", 1)[1].strip()
    assert secret.startswith("kr_live_") and len(secret) == 63
    listed = json.loads((await cli(config, "keys", "list", "--json")).stdout)
    assert [(k["allowed_models"], k["status"]) for k in listed] == [(["mock-gpt", "fast"], "active")]
    key_id = listed[0]["id"]
    assert (await cli(config, "keys", "revoke", key_id)).returncode == 0
    assert (await cli(config, "keys", "list", "--active", "--json")).stdout.strip() == "[]"
    assert (await cli(config, "keys", "delete", key_id)).returncode == 0
    gone = await cli(config, "keys", "delete", key_id)
    assert gone.returncode == 2 and "key_id" in gone.stderr
    with sqlite3.connect(tmp_path / "k.db") as db:
        actions = [r[0] for r in db.execute("SELECT action FROM audit_log ORDER BY seq")]
        assert actions == ["customer.create", "key.create", "key.revoke", "key.delete"]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("k.db*"))
    assert secret.encode() not in stored
    # The config-file key tools keep working beside the database ones.
    new = await cli_plain("keys", "new", "--id", "cfgkey", "--rounds", "4")
    assert new.returncode == 0 and 'id = "cfgkey"' in new.stdout


async def test_customers_list_says_on_stderr_how_to_get_the_next_page(config):
    """A full page may not be the end: the command names the next page's ``--after`` on
    stderr (stdout stays the table or the JSON), and says nothing once the last page is
    shown, even when that page is exactly full."""
    for n in range(3):
        made = await cli(config, "customers", "create", "--email", f"p{n}@example.com")
        assert made.returncode == 0, made.stderr
    ids = sorted(c["id"] for c in json.loads((await cli(config, "customers", "list",
                                                         "--json")).stdout))
    first = await cli(config, "customers", "list", "--limit", "2", "--json")
    assert [c["id"] for c in json.loads(first.stdout)] == ids[:2]
    assert first.stderr.count("\n") == 1, first.stderr
    assert f"kraken customers list --limit 2 --after {ids[1]}" in first.stderr
    last = await cli(config, "customers", "list", "--limit", "2", "--after", ids[1])
    assert ids[2] in last.stdout and last.stderr == ""
    exact = await cli(config, "customers", "list", "--limit", "3")
    assert exact.returncode == 0 and exact.stderr == ""
