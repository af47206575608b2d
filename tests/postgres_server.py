"""A real, throwaway PostgreSQL for tests: initdb into a temp dir, loopback only, stopped at the end.

    from postgres_server import postgres_server, pg_server, pg_dsn   # pytest fixtures

``postgres_server()`` is a context manager yielding a ``PostgresServer`` (``port``,
``dsn(database)``, ``create_database()``, ``stop()``/``start()``/``restart()`` to simulate an
outage). ``pg_server`` is one server per test module; ``pg_dsn`` is a fresh, empty database on it
per test. A missing PostgreSQL fails the test: ``tools/test`` installs it (Debian ``postgresql``).

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` system user
(created by the Debian package) and every server binary runs through ``runuser -u postgres --``.
fsync and synchronous_commit are off: a test cluster is thrown away, never recovered.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

START_TIMEOUT_S = 30
PORT_ATTEMPTS = 5
SUPERUSER = "postgres"
_names = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_dir() -> Path:
    """The newest installed server version's bin directory (``/usr/lib/postgresql/N/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")  # other distributions put it on PATH
    if on_path:
        return Path(on_path).parent
    pytest.fail("PostgreSQL is not installed; run tools/test, which installs it (Debian package postgresql)")


def _as_owner() -> list[str]:
    """Prefix for server commands: initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root needs the 'postgres' system user (Debian package postgresql)")
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """One cluster in a temp dir; the server is started and stopped with pg_ctl."""

    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.bindir = bindir
        self.port = 0
        self._prefix = _as_owner()

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run([*self._prefix, str(self.bindir / args[0]), *args[1:]],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def init(self) -> None:
        done = self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                         "-E", "UTF8", "--locale=C", "--no-sync")
        if done.returncode:
            pytest.fail(f"initdb failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self) -> None:
        """Start on ``self.port`` (a free one is picked the first time); wait until it accepts."""
        last = ""
        for _ in range(PORT_ATTEMPTS if not self.port else 1):
            port = self.port or _free_port()
            options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
                       " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            done = self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log),
                             "-w", "-t", str(START_TIMEOUT_S), "-o", options,
                             timeout=START_TIMEOUT_S + 5)
            if done.returncode == 0:
                self.port = port
                return
            last = done.stdout[-1000:] + done.stderr[-1000:] + self._log_tail()
        pytest.fail(f"PostgreSQL did not start:\n{last}")

    def stop(self) -> None:
        """Stop the server (fast: disconnect clients, no checkpoint wait); idempotent."""
        if (self.data / "postmaster.pid").exists():
            done = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
            if done.returncode and (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")

    def restart(self) -> None:
        self.stop()
        self.start()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        name = name or f"kraken_test_{os.getpid()}_{next(_names)}"
        done = subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", SUPERUSER, "-T", "template0", name],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if done.returncode:
            pytest.fail(f"createdb failed: {done.stderr[-1000:]}")
        return self.dsn(name)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started server in a fresh temp dir, stopped and removed on exit."""
    bindir = bin_dir()
    # Not under pytest's tmp dirs: those are 0700 root, and the postgres user must reach its files.
    root = Path(tempfile.mkdtemp(prefix="kraken-pg-"))
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chmod(root, 0o700)
        server = PostgresServer(root, bindir)
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by one test module (tests isolate by database)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> str:
    """DSN of a fresh, empty database for one test."""
    return pg_server.create_database()


@dataclass
class StoreBackend:
    """One store backend under test: ``name`` "sqlite" (``target`` the file's path) or
    "postgres" (``target`` the database's DSN)."""

    name: str
    target: str

    async def open(self) -> Any:
        """Another store on the same database (as another process or host would open it)."""
        if self.name == "sqlite":
            from kraken.store.sqlite import SqliteStore

            return await SqliteStore.open(self.target)
        from kraken.store.postgres import PostgresStore

        return await PostgresStore.open(self.target, pool_size=2)

    def sql(self, text: str) -> str:
        """``text`` with this backend's placeholders (``?`` numbered for PostgreSQL)."""
        if self.name == "sqlite":
            return text
        numbers = iter(range(1, 1000))
        return re.sub(r"\?", lambda _: f"${next(numbers)}", text)


async def raw_execute(backend: StoreBackend, sql: str) -> None:
    """Run ``sql`` on a plain connection of the backend's own driver, outside Kraken's store
    (what an operator's SQL shell would do); the driver's own error comes out."""
    if backend.name == "sqlite":
        import sqlite3

        conn = sqlite3.connect(backend.target)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(backend.target)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
