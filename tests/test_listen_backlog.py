"""The client listener's accept queue: a burst larger than asyncio's default backlog (100) is
held by the kernel while Kraken is busy, instead of losing SYNs (clients then wait 1-7 s for
retransmits). Proven with a real ``kraken serve`` stopped (SIGSTOP) while clients connect."""
from __future__ import annotations

import select
import signal
import socket
import time
from pathlib import Path

import pytest

from harness import KrakenProcess, free_port, kraken_mapping, running_mock, write_toml
from kraken.http.listener import BACKLOG

pytestmark = pytest.mark.anyio
DEFAULT_ASYNCIO_BACKLOG = 100


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


def connect_all(port: int, count: int, seconds: float) -> tuple[list[socket.socket], int]:
    """Start ``count`` connects at once; how many finished their handshake within ``seconds``."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLOUT)
    connected: set[int] = set()
    deadline = time.monotonic() + seconds
    while len(connected) < count and time.monotonic() < deadline:
        for fd, _ in poller.poll(50):
            poller.unregister(fd)
            connected.add(fd)
    ok = sum(1 for s in socks if s.fileno() in connected
             and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    return socks, ok


def status_of(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    return sock.recv(64).split(b" ", 2)[1]


async def test_a_burst_beyond_asyncios_default_backlog_queues_while_kraken_is_busy(tmp_path):
    count = min(BACKLOG, somaxconn(), 400) - 8
    assert count > DEFAULT_ASYNCIO_BACKLOG + 50  # else this machine cannot tell the two apart
    port = free_port()
    async with running_mock() as mock:
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port},
                             limits={"trusted_proxies": ["127.0.0.1"]})  # one address, many conns
        write_toml(tmp_path / "kraken.toml", doc)
        kp = KrakenProcess(tmp_path / "kraken.toml", port, tmp_path / "kraken.log")
        kp.start()
        socks: list[socket.socket] = []
        try:
            kp.signal(signal.SIGSTOP)  # busy: nothing is accepted, the kernel queues
            socks, connected = connect_all(port, count, seconds=2.0)
            kp.signal(signal.SIGCONT)
            assert connected == count
            assert [status_of(s) for s in socks] == [b"200"] * count
        finally:
            kp.signal(signal.SIGCONT)
            for s in socks:
                s.close()
            kp.kill()
