"""Helpers for database-key tests: a real ``kraken serve`` subprocess on a shared SQLite file,
the ``kraken`` CLI as a subprocess, chat requests and /metrics samples."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
from prometheus_client.parser import text_string_to_metric_families

from harness import KrakenProcess, Reply, free_port, http, kraken_mapping, write_toml


@contextlib.asynccontextmanager
async def kraken_process(tmp: Path, mock_port: int, name: str = "k", *,
                         db: Path | None = None, args: list[str] | None = None,
                         **sections: Any) -> AsyncIterator[KrakenProcess]:
    """``kraken serve`` in a subprocess; several may share ``db`` (own journal each)."""
    port = free_port()
    doc = kraken_mapping(tmp, mock_port, server={"port": port}, **sections)
    doc["store"] = {**doc["store"], "path": str(db or tmp / "kraken.db"),
                    "journal_dir": str(tmp / f"{name}.journal")}
    doc["limits"] = {"ip_auth_failures": 1000, **doc.get("limits", {})}
    cfg_path = tmp / f"{name}.toml"
    write_toml(cfg_path, doc)
    kp = KrakenProcess(cfg_path, port, tmp / f"{name}.log", args=args)
    await anyio.to_thread.run_sync(kp.start)
    try:
        yield kp
    finally:
        kp.kill()


async def cli(config_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """``kraken <argv> --config <config_path>`` as a subprocess (stdout/stderr captured)."""
    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kraken", *argv, "--config", str(config_path)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return await anyio.to_thread.run_sync(run)


async def chat(port: int, key: str, model: str = "mock-gpt") -> Reply:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return await http(port, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                      {"Authorization": f"Bearer {key}"})


async def metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample on the process's own /metrics (0 when absent)."""
    text = (await http(port, "GET", "/metrics")).body.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return 0.0
