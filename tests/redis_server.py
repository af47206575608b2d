"""A real, throwaway redis-server for tests: loopback only, no persistence, stopped by PID.

    from redis_server import redis_server, redis_url   # redis_url is a module-scoped fixture

``redis_server(dir)`` is a context manager yielding a ``RedisServer`` (``url``, ``pid``,
``stop()``, ``pause()``/``resume()`` to simulate a hung server). A missing redis-server fails
the test: ``tools/test`` installs it (Debian package ``redis-server``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
PORT_ATTEMPTS = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP: the server keeps its socket but answers nothing (a hung Redis)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def hung(self):
        """Paused for the block, resumed after it whatever the block raised."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        """Stop this server (by PID) and wait for it; idempotent."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)


def _start(binary: str, workdir: Path) -> RedisServer:
    last = ""
    for _ in range(PORT_ATTEMPTS):  # another process may take the free port before we bind it
        port = _free_port()
        log = workdir / f"redis-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"],
                cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        server = RedisServer(proc, port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _pings(port):
                return server
            time.sleep(0.02)
        server.stop()
        last = log.read_text(errors="replace")[-2000:]
    pytest.fail(f"redis-server did not start after {PORT_ATTEMPTS} attempts:\n{last}")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; run tools/test, which installs it "
                    "(Debian package redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = _start(binary, workdir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """URL of a redis-server shared by one test module (tests isolate by key prefix)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
