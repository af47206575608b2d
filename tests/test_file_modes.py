"""Files Kraken writes hold customers' emails, key hashes, sealed BYOK keys and request
metadata: they must be private to Kraken's user even under the common umask 022, with which
the README's ``kraken serve --demo`` runs (no systemd ``UMask=``)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.harness import KrakenProcess, free_port, write_toml

_PROVIDERS = {"mockai": {"kind": "openai_compatible", "models": ["m"], "api_key": "sk-unused",
                         "base_url": f"http://127.0.0.1:{free_port()}/v1"}}
"""Serving needs a provider; none is called."""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _kraken(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", *args], capture_output=True,
                          text=True, timeout=60, umask=0o022)


def test_serve_under_umask_022_keeps_the_database_private(tmp_path):
    """Another local user must not read kraken.db (or its WAL/SHM) while Kraken runs. (The
    crash journal makes its own 0700/0600 files: tests/meter/test_journal.py.)"""
    port = free_port()
    state = tmp_path / "state"
    state.mkdir()
    cfg = tmp_path / "kraken.toml"
    write_toml(cfg, {"server": {"host": "127.0.0.1", "port": port},
                     "store": {"path": str(state / "kraken.db")},
                     "providers": _PROVIDERS})
    k = KrakenProcess(cfg, port, tmp_path / "kraken.log", args=["--log-level", "WARNING"])
    old = os.umask(0o022)  # inherited by the child Popen forks in start()
    try:
        k.start()  # ready: the store is open and its migrations written
    finally:
        os.umask(old)
    try:
        db = state / "kraken.db"
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        k.signal(15)
        k.wait()


def test_export_file_under_umask_022_is_private(tmp_path):
    """``kraken export -o`` writes one customer's personal data; others must not read it."""
    cfg = tmp_path / "kraken.toml"
    write_toml(cfg, {"store": {"path": str(tmp_path / "kraken.db")}})
    made = _kraken("customers", "create", "--email", "ada@example.com", "--json",
                   "--config", str(cfg))
    assert made.returncode == 0, made.stderr
    out = tmp_path / "ada.jsonl"
    done = _kraken("export", json.loads(made.stdout)[0]["id"], "-o", str(out), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "ada@example.com" in out.read_text()
    assert _mode(out) == 0o600
    assert _mode(tmp_path / "kraken.db") == 0o600


def test_serve_warns_about_a_database_others_can_read(tmp_path):
    """A kraken.db an older Kraken made 0644 stays 0644 (a umask cannot tighten it): say so."""
    port = free_port()
    db = tmp_path / "kraken.db"
    db.touch()
    db.chmod(0o644)
    cfg = tmp_path / "kraken.toml"
    write_toml(cfg, {"server": {"host": "127.0.0.1", "port": port},
                     "store": {"path": str(db)}, "providers": _PROVIDERS})
    log = tmp_path / "kraken.log"
    k = KrakenProcess(cfg, port, log)
    k.start()
    try:
        assert f"{db} is accessible by other users (mode 0644)" in log.read_text()
    finally:
        k.signal(15)
        k.wait()
