"""``kraken admin-token``, ``kraken usage`` and ``kraken audit list``: tables by default,
JSON with --json, over the same store the server uses."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from adminkit import admin_kraken, insert_requests
from harness import write_toml

from kraken.admin.token import hash_token

pytestmark = pytest.mark.anyio


def _kraken(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_admin_token_prints_a_token_and_the_hash_to_configure():
    out = _kraken("admin-token")
    assert out.returncode == 0
    token = out.stdout.splitlines()[0].rsplit(" ", 1)[1]
    assert token.startswith("kradm_") and len(token) > 40
    assert f'token_hash = "{hash_token(token)}"' in out.stdout
    hashed = _kraken("admin-token", "--hash", stdin=token + "\n")
    assert hashed.returncode == 0 and hashed.stdout.strip() == hash_token(token)
    empty = _kraken("admin-token", "--hash", stdin="\n")
    assert empty.returncode == 2 and "token" in empty.stderr


async def test_usage_and_audit_as_tables_and_json(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        await insert_requests(k.db_path, cus["id"], 20, latency=lambda i: float(i + 1), error_every=5)
        await insert_requests(k.db_path, cus["id"], 4, model="other-model")
        db = k.db_path
    cfg = tmp_path / "cli.toml"
    write_toml(cfg, {"store": {"path": str(db)}})
    table = _kraken("usage", "--config", str(cfg), "--group-by", "model")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "requests", "prompt_tokens"]
    row = next(line.split() for line in lines if line.startswith("mock-gpt"))
    assert row[1] == "20"
    as_json = _kraken("usage", "--config", str(cfg), "--group-by", "model", "--json",
                      "--customer", cus["id"])
    data = {r["group"]: r for r in json.loads(as_json.stdout)}
    assert data["mock-gpt"]["p50_latency_ms"] == 10.0 and data["mock-gpt"]["p95_latency_ms"] == 19.0
    assert data["mock-gpt"]["error_rate"] == 0.2 and data["other-model"]["requests"] == 4
    audit = _kraken("audit", "list", "--config", str(cfg))
    assert audit.returncode == 0 and "customer.create" in audit.stdout
    assert audit.stdout.splitlines()[0].split() == ["seq", "ts", "actor", "action", "target",
                                                    "subject", "detail"]
    bad = _kraken("audit", "list", "--config", str(cfg), "--limit", "0")
    assert bad.returncode == 2 and "--limit" in bad.stderr
    nocfg = _kraken("usage", "--config", str(tmp_path / "missing.toml"))
    assert nocfg.returncode == 2 and "missing.toml" in nocfg.stderr


async def test_export_to_a_file_that_cannot_be_written_is_one_line_and_not_audited(tmp_path):
    async with admin_kraken(tmp_path) as (admin, k):
        cus = await admin.customer()
        db = k.db_path
    cfg = tmp_path / "cli.toml"
    write_toml(cfg, {"store": {"path": str(db)}})
    target = tmp_path / "no-such-dir" / "export.jsonl"
    out = _kraken("export", cus["id"], "--config", str(cfg), "-o", str(target))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert "--output" in out.stderr and str(target) in out.stderr
    entries = json.loads(_kraken("audit", "list", "--config", str(cfg), "--json").stdout)
    assert "customer.export" not in {e["action"] for e in entries}
    written = tmp_path / "export.jsonl"
    done = _kraken("export", cus["id"], "--config", str(cfg), "-o", str(written))
    assert done.returncode == 0 and cus["id"] in written.read_text()
    entries = json.loads(_kraken("audit", "list", "--config", str(cfg), "--json").stdout)
    assert [e["action"] for e in entries].count("customer.export") == 1


def test_admin_token_hash_on_a_terminal_does_not_echo_the_token(tmp_path):
    """Typed or pasted at a terminal, the token must not be shown back (scrollback, a shared
    screen): a hidden prompt, as ``kraken keys hash`` and ``kraken byok set`` have."""
    token = "kradm_" + "E" * 43
    status, shown = on_terminal(["admin-token", "--hash"], b"oken", token.encode() + b"\n")
    assert status == 0
    assert hash_token(token).encode() in shown
    assert token.encode() not in shown


def on_terminal(argv: list[str], prompt: bytes, typed: bytes) -> tuple[int, bytes]:
    """Run ``kraken <argv>`` on a pseudo-terminal, type ``typed`` once ``prompt`` is shown;
    (exit status, everything the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kraken", *argv],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while prompt not in shown and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                shown += os.read(master, 4096)
        os.write(master, typed)
        status = proc.wait(timeout=30)
        while select.select([master], [], [], 0)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return status, shown


def _customer(cfg) -> str:
    made = _kraken("customers", "create", "--email", "erase-me@example.com", "--json",
                   "--config", str(cfg))
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)[0]["id"]


def test_erase_answered_with_ctrl_d_is_one_line_and_erases_nothing(tmp_path):
    """End of input at the confirmation prompt (Ctrl-D) is a "no": one line, a non-zero
    exit, the customer still there; not an EOFError traceback."""
    cfg = tmp_path / "cli.toml"
    write_toml(cfg, {"store": {"path": str(tmp_path / "k.db")}})
    cid = _customer(cfg)
    status, shown = on_terminal(["erase", cid, "--config", str(cfg)], b"[y/N]", b"\x04")
    after_prompt = shown.split(b"[y/N]", 1)[1].decode()
    assert status == 1, shown
    assert "Traceback" not in after_prompt and "EOFError" not in after_prompt, shown
    assert after_prompt.strip() == "not erased", shown
    assert _kraken("customers", "show", cid, "--config", str(cfg)).returncode == 0
    entries = json.loads(_kraken("audit", "list", "--config", str(cfg), "--json").stdout)
    assert "customer.erase" not in {e["action"] for e in entries}


def test_export_into_a_reader_that_stops_early_exits_quietly(tmp_path):
    """``kraken export cus_... | head -c 10``: the reader goes away with most of the export
    unread. As a Unix tool would, Kraken stops quietly (the status a shell reports for a
    writer killed by SIGPIPE, 141), with no BrokenPipeError traceback on the terminal."""
    from adminkit import _insert_requests

    cfg = tmp_path / "cli.toml"
    write_toml(cfg, {"store": {"path": str(tmp_path / "k.db")}})
    cid = _customer(cfg)
    _insert_requests(tmp_path / "k.db", cid, 3000)  # far more than a pipe's buffer holds
    proc = subprocess.Popen([sys.executable, "-m", "kraken", "export", cid, "--config",
                             str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = proc.stdout.read(10)
        proc.stdout.close()  # what head -c 10 does once it has its bytes
        status = proc.wait(timeout=60)
        errors = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert len(head) == 10
    assert errors == "" and status == 141, (status, errors)
