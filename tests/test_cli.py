"""The kraken command as a user runs it."""
from __future__ import annotations

import subprocess
import sys

from kraken.gateway.keys import check_key, generate_key


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_keys_hash_reads_the_key_from_stdin():
    key = generate_key("abc")
    out = run("keys", "hash", "--rounds", "4", stdin=key + "\n")
    assert out.returncode == 0
    hashed = out.stdout.strip()
    assert hashed.startswith("$2") and check_key(key, hashed)
    assert key not in out.stdout + out.stderr


def test_keys_hash_refuses_a_non_key():
    out = run("keys", "hash", stdin="hello\n")
    assert out.returncode == 2 and "not a Kraken key" in out.stderr


def test_keys_new_prints_a_block_that_verifies():
    out = run("keys", "new", "--id", "team1", "--customer", "acme", "--rounds", "4")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    key = lines[0].split(": ", 1)[1]
    hashed = [l for l in lines if l.startswith("hash = ")][0].split('"')[1]
    assert key.startswith("kr_live_team1_") and check_key(key, hashed)
    assert 'customer_id = "acme"' in out.stdout


def test_serve_with_bad_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[server]\nport = 'x'\n")
    out = run("serve", "--config", str(path))
    assert out.returncode == 2 and "server.port" in out.stderr
