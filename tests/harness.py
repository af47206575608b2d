"""Shared test harness: a real Kraken (in-process or as a subprocess) in front of a real
local mock provider, both on loopback sockets. Nothing of Kraken's own is mocked."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from kraken import app, config
from kraken.accounts.keys import generate_key, hash_key
from kraken.mock.openai_mock import MockOpenAI

TEST_KEY = generate_key("testkey", env="test")
TEST_KEY_HASH = hash_key(TEST_KEY, rounds=4)
PROVIDER_KEY = "sk-provider-secret-0123456789abcdefghij"
PROMPT_CANARY = "CANARY-PROMPT-7f3a9c-do-not-store"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kraken_mapping(tmp: Path, mock_port: int, **sections: dict) -> dict[str, Any]:
    """A config document: one OpenAI-compatible provider (the mock) and one test key."""
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp / "kraken.db")},
        "meter": {"flush_interval_ms": 20},
        "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1"}],
        "providers": {
            "mockai": {
                "kind": "openai_compatible",
                "base_url": f"http://127.0.0.1:{mock_port}/v1",
                "api_key": PROVIDER_KEY,
                "models": ["mock-gpt"],
                "read_timeout_s": 5.0,
                "connect_timeout_s": 2.0,
            }
        },
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(doc.get(name), dict):
            doc[name] = {**doc[name], **values}
        else:
            doc[name] = values
    return doc


@dataclass
class Running:
    port: int
    db_path: Path
    stop: asyncio.Event
    task: asyncio.Task

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def openai_client(k: "Running") -> Any:
    """The real OpenAI SDK pointed at a running Kraken with the test key (no SDK retries)."""
    import openai

    return openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key=TEST_KEY, max_retries=0)


@contextlib.asynccontextmanager
async def running_kraken(doc: dict[str, Any]) -> AsyncIterator[Running]:
    """Kraken in this event loop, stopped (drained and flushed) on exit."""
    cfg = config.from_mapping(doc, "<test>", env={})
    loop = asyncio.get_running_loop()
    started: asyncio.Future = loop.create_future()
    stop = asyncio.Event()
    task = loop.create_task(app.serve(cfg, started=started, stop=stop))
    done, _ = await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raise the startup error
    running = Running(started.result(), Path(cfg.store.path), stop, task)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def running_mock(**kwargs: Any) -> AsyncIterator[MockOpenAI]:
    mock = MockOpenAI(api_key=PROVIDER_KEY, **kwargs)
    await mock.start()
    try:
        yield mock
    finally:
        await mock.close()


def auth_headers(key: str = TEST_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class KrakenProcess:
    """Kraken as a real subprocess (``python -m kraken serve``), for signal tests."""

    def __init__(self, config_path: Path, port: int, log_path: Path, tls=None,
                 args: list[str] | None = None):
        self.args = list(args or [])
        """Extra arguments before ``serve`` (e.g. --log-level DEBUG)."""
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.tls = tls
        """Client SSLContext when Kraken listens with TLS."""
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kraken", *self.args, "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kraken exited early: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as raw:
                    s = self.tls.wrap_socket(raw, server_hostname="localhost") if self.tls else raw
                    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        return
            time.sleep(0.05)
        raise RuntimeError("kraken did not become ready")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def write_toml(path: Path, doc: dict[str, Any]) -> None:
    """Minimal TOML writer for the harness's config documents."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        raise TypeError(v)

    for name, section in doc.items():
        if name == "keys":
            for key in section:
                lines.append("[[keys]]")
                lines += [f"{k} = {value(v)}" for k, v in key.items()]
        elif name == "providers":
            for pname, p in section.items():
                lines.append(f"[providers.{pname}]")
                lines += [f"{k} = {value(v)}" for k, v in p.items()]
        elif name == "prices":
            for kind, models in section.items():
                for model, fields in models.items():
                    lines.append(f'[prices.{kind}."{model}"]')
                    lines += [f"{k} = {value(v)}" for k, v in fields.items()]
        elif name == "models":
            lines.append("[models]")
            lines += [f'"{k}" = {value(v)}' for k, v in section.items()]
        else:
            lines.append(f"[{name}]")
            lines += [f"{k} = {value(v)}" for k, v in section.items()]
    path.write_text("\n".join(lines) + "\n")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


async def http(port: int, method: str, path: str, body: bytes = b"",
               headers: Mapping[str, str] | None = None, timeout: float = 10.0, *,
               source: str | None = None, tls: ssl.SSLContext | None = None) -> Reply:
    """One request on a fresh connection, parsed with h11 (a client independent of Kraken).

    ``source``: the local address to bind (another client address on 127/8); ``tls``: the
    client context for a TLS listener (``localhost`` as the server name)."""
    import h11

    options: dict[str, Any] = {}
    if source is not None:
        options["local_addr"] = (source, 0)
    if tls is not None:
        options.update(ssl=tls, server_hostname="localhost")
    reader, writer = await asyncio.open_connection("127.0.0.1", port, **options)
    conn = h11.Connection(h11.CLIENT)
    host = "localhost" if tls is not None else "127.0.0.1"
    hdrs = [("host", host), ("connection", "close"), ("content-length", str(len(body)))]
    hdrs += list((headers or {}).items())
    writer.write(conn.send(h11.Request(method=method, target=path, headers=hdrs)))
    writer.write(conn.send(h11.Data(data=body)) if body else b"")
    writer.write(conn.send(h11.EndOfMessage()))
    status, out_headers, chunks = 0, {}, []
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    out_headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    finally:
        writer.close()
    return Reply(status, out_headers, b"".join(chunks))


async def write_db(path: Path | str, sql: str, params: tuple = ()) -> None:
    """One write to a Kraken database from outside Kraken, in a thread: an in-process Kraken
    runs in this event loop, and a blocking wait here for its write lock would keep it from
    ever releasing it (then "database is locked")."""
    import anyio.to_thread

    def write() -> None:
        conn = sqlite3.connect(path, timeout=30)
        with conn:
            conn.execute(sql, params)
        conn.close()

    await anyio.to_thread.run_sync(write)


def db_rows(db_path) -> list[dict]:
    """All request records in a Kraken SQLite file, oldest first (read with plain sqlite3)."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY ts")]
    finally:
        conn.close()


async def wait_for(predicate, seconds: float = 10.0):
    """Poll an observable condition with a hard bound (never a bare sleep as an assertion)."""
    import anyio

    with anyio.fail_after(seconds):
        while not (value := predicate()):
            await asyncio.sleep(0.01)
    return value


async def wait_rows(db_path, n: int) -> list[dict]:
    """Records are flushed in batches: wait (bounded) until ``n`` are in SQLite."""
    return await wait_for(lambda: rows if len(rows := db_rows(db_path)) >= n else None)


@contextlib.asynccontextmanager
async def kraken_process(tmp: Path, mock_port: int, extra_keys: tuple[dict, ...] = (),
                         **sections: dict) -> AsyncIterator[KrakenProcess]:
    """``python -m kraken serve`` in front of the mock at ``mock_port``, on a free port, ready
    (``sections`` and ``extra_keys`` go into its config); killed on the way out if the test
    did not stop it."""
    import anyio

    port = free_port()
    doc = kraken_mapping(tmp, mock_port, **{**sections, "server": {"port": port}})
    doc["keys"].extend(extra_keys)
    write_toml(tmp / "k.toml", doc)
    kp = KrakenProcess(tmp / "k.toml", port, tmp / "kraken.log")
    await anyio.to_thread.run_sync(kp.start)
    try:
        yield kp
    finally:
        kp.kill()


@contextlib.asynccontextmanager
async def mock_and_kraken(tmp: Path, **mock_kwargs: Any) -> AsyncIterator[tuple[MockOpenAI, Running]]:
    """The usual stack: a mock provider and Kraken in front of it."""
    async with running_mock(**mock_kwargs) as mock:
        async with running_kraken(kraken_mapping(tmp, mock.port)) as k:
            yield mock, k
