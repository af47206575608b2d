"""One client must not be able to take a provider's whole connection pool, and a full pool is
not the provider's failure. Through a real ``kraken serve`` process in front of the mock
provider: a key's idle streams hold at most its share of the pool (the rest get a prompt 429),
other keys are still served or get a prompt 503 ``pool_exhausted`` with Retry-After (never a
504 after a silent wait), the circuit breaker stays closed, and a client that reads nothing
has its upstream connections released after ``send_stall_timeout_s`` (HTTP/1.1 and HTTP/2).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from pathlib import Path
from typing import AsyncIterator

import anyio
import h2.config
import h2.connection
import h2.events
import pytest
from h2.settings import SettingCodes, Settings
from harness import (
    PROVIDER_KEY,
    KrakenProcess,
    free_port,
    http,
    running_mock,
    wait_for,
    write_toml,
)

from kraken.accounts.keys import generate_key, hash_key

pytestmark = pytest.mark.anyio

KEYS = {name: generate_key(name, env="test") for name in ("hog", "hogtwo", "victim")}
HASHES = {name: hash_key(key, rounds=4) for name, key in KEYS.items()}

HANGING = {"chunks": 5, "hang_after_chunks": 2}
"""A stream that starts, then holds its provider connection open without a byte more."""
FLOOD = {"chunks": 60_000, "hang_after_chunks": 100_000}
"""A long stream sent event by event (the mock honours backpressure): megabytes to a reader."""


def chat(stream: bool = False, mock: dict | None = None) -> bytes:
    body: dict = {"model": "mock-gpt", "stream": stream,
                  "messages": [{"role": "user", "content": "hi"}]}
    if mock:
        body["mock"] = mock
    return json.dumps(body).encode()


def request_bytes(port: int, key: str, body: bytes) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"authorization: Bearer {key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


@contextlib.asynccontextmanager
async def kraken(tmp_path: Path, mock_port: int, server: dict | None = None,
                 **provider: object) -> AsyncIterator[int]:
    """``kraken serve`` (a subprocess) with three keys and the mock as provider ``mockai``."""
    port = free_port()
    doc = {
        "server": {"host": "127.0.0.1", "port": port, **(server or {})},
        "store": {"path": str(tmp_path / "kraken.db")},
        "meter": {"flush_interval_ms": 20},
        "keys": [{"id": n, "hash": HASHES[n], "customer_id": f"cust_{n}"} for n in KEYS],
        "providers": {"mockai": {
            "kind": "openai_compatible", "base_url": f"http://127.0.0.1:{mock_port}/v1",
            "api_key": PROVIDER_KEY, "models": ["mock-gpt"], "connect_timeout_s": 2.0,
            "read_timeout_s": 60.0, **provider}},
    }
    path = tmp_path / "kraken.toml"
    write_toml(path, doc)
    proc = KrakenProcess(path, port, tmp_path / "kraken.log")
    await anyio.to_thread.run_sync(proc.start)
    try:
        yield port
    finally:
        proc.signal(2)  # SIGINT: drain and stop
        try:
            await anyio.to_thread.run_sync(proc.wait, 30.0)
        finally:
            proc.kill()


async def metric(port: int, name: str, **labels: str) -> float:
    """One sample of Kraken's /metrics (0 when absent)."""
    text = (await http(port, "GET", "/metrics")).body.decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return 0.0


async def until_metric(port: int, value: float, name: str, seconds: float = 20.0,
                       **labels: str) -> None:
    with anyio.fail_after(seconds):
        while await metric(port, name, **labels) != value:
            await anyio.sleep(0.05)


class HeldStream:
    """A streamed request whose response head was read and whose body is never read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 status: int, headers: dict[str, str]):
        self.reader, self.writer, self.status, self.headers = reader, writer, status, headers


async def open_stream(port: int, key: str, mock: dict) -> HeldStream:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request_bytes(port, key, chat(stream=True, mock=mock)))
    with anyio.fail_after(15):
        head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return HeldStream(reader, writer, int(lines[0].split()[1]), {k.lower(): v for k, v in
                                                                 headers.items()})


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


async def test_one_key_holds_only_its_share_and_a_full_pool_never_opens_the_circuit(tmp_path):
    async with running_mock() as mock, kraken(tmp_path, mock.port, max_connections=10,
                                              pool_wait_s=0.5, per_key_share=0.5) as port:
        held: list[HeldStream] = []
        try:
            hog = await asyncio.gather(*(open_stream(port, KEYS["hog"], HANGING)
                                         for _ in range(11)))
            held += hog
            statuses = sorted(s.status for s in hog)
            assert statuses == [200] * 5 + [429] * 6, "a key holds at most half of the pool"
            for s in hog:
                if s.status == 429:
                    assert s.headers["retry-after"] == "1"  # retrying later helps: SDKs wait
            replies = await asyncio.gather(*(http(port, "POST", "/v1/chat/completions", chat(),
                                                  auth("victim")) for _ in range(3)))
            assert [r.status for r in replies] == [200] * 3, "the other keys are still served"

            held += await asyncio.gather(*(open_stream(port, KEYS["hogtwo"], HANGING)
                                           for _ in range(5)))
            assert [s.status for s in held[-5:]] == [200] * 5
            await until_metric(port, 10, "kraken_upstream_connections",
                               provider="mockai", state="busy")
            for _ in range(6):  # more than breaker_failures (5) refusals in a row
                r = await http(port, "POST", "/v1/chat/completions", chat(), auth("victim"))
                assert r.status == 503, r.body
                assert r.json()["error"]["code"] == "pool_exhausted"
                assert int(r.headers["retry-after"]) >= 1
            assert await metric(port, "kraken_refused_total", reason="pool_exhausted") == 6
            assert await metric(port, "kraken_refused_total", reason="key_concurrency") == 6
            assert await metric(port, "kraken_circuit_state", provider="mockai") == 0
        finally:
            for s in held:
                s.writer.close()
        await until_metric(port, 0, "kraken_upstream_connections",
                           provider="mockai", state="busy")
        r = await http(port, "POST", "/v1/chat/completions", chat(), auth("victim"))
        assert r.status == 200, "the breaker stayed closed: the provider was never at fault"
        assert await metric(port, "kraken_circuit_state", provider="mockai") == 0


def never_reading_socket(port: int, key: str) -> socket.socket:
    """A client with a tiny receive buffer that sends a streamed request and reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request_bytes(port, key, chat(stream=True, mock=FLOOD)))
    return sock


STALL = {"send_stall_timeout_s": 1.0, "write_buffer_high": 16384}


async def test_a_client_that_reads_nothing_gives_its_upstream_connections_back(tmp_path):
    async with running_mock() as mock, kraken(tmp_path, mock.port, server=STALL,
                                              max_connections=4, per_key_share=1.0) as port:
        socks = [never_reading_socket(port, KEYS["hog"]) for _ in range(4)]
        try:
            await wait_for(lambda: len(mock.requests) == 4, 20)
            # The pool fills, then every stalled client is cut and its provider call cancelled.
            await until_metric(port, 0, "kraken_upstream_connections", 30,
                               provider="mockai", state="busy")
            await wait_for(lambda: not mock._conns, 20)
            r = await http(port, "POST", "/v1/chat/completions", chat(), auth("victim"))
            assert r.status == 200
        finally:
            for s in socks:
                s.close()


async def test_an_http2_stream_that_opens_no_window_gives_its_upstream_connection_back(
        tmp_path):
    async with running_mock() as mock, kraken(tmp_path, mock.port, server=STALL,
                                              max_connections=4, per_key_share=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.local_settings = Settings(client=True,
                                       initial_values={SettingCodes.INITIAL_WINDOW_SIZE: 0})
        conn.initiate_connection()
        body = chat(stream=True, mock=FLOOD)
        for _ in range(4):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                    (":path", "/v1/chat/completions"),
                                    (":authority", "127.0.0.1"),
                                    ("authorization", f"Bearer {KEYS['hog']}"),
                                    ("content-length", str(len(body)))])
            conn.send_data(sid, body, end_stream=True)
        writer.write(conn.data_to_send())
        resets: set[int] = set()
        try:
            with anyio.fail_after(30):
                while len(resets) < 4:  # every stalled stream is reset by Kraken
                    data = await reader.read(65536)
                    assert data, "the connection stays up; only the stalled streams go"
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.StreamReset):
                            resets.add(event.stream_id)
                    writer.write(conn.data_to_send())
            await until_metric(port, 0, "kraken_upstream_connections", 20,
                               provider="mockai", state="busy")
            await wait_for(lambda: not mock._conns, 20)
            assert len(mock.requests) == 4
        finally:
            writer.close()
