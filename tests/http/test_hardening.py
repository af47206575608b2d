"""Protocol hardening on real loopback sockets: clients that never read (slow read), too many
connections from one address, slowloris and slow POST, and the request-smuggling variants
that tests/http/test_h1_malformed.py does not already list.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import time
from typing import Any

import pytest

from h1wire import connect, is_openai_error, parse_responses, read_to_eof
from harness import (TEST_KEY, db_rows, kraken_mapping, running_kraken, running_mock,
                     wait_for, wait_rows)
from kraken.config import ServerConfig
from kraken.http.connlimit import ConnectionLimiter, address_key
from kraken.http.exchange import Request
from kraken.http.h1 import H1Connection
from kraken.http.h1exchange import H1Exchange
from kraken.http.h1body import BodyRejected, ChunkedBody, FixedBody
from kraken.http.listener import ProtocolSelector, cleartext_factory
from test_h2 import eventually, h2_client
from test_h2 import serve as h2_serve

pytestmark = pytest.mark.anyio

H = b"Host: example.com\r\n"
POST = b"POST /v1/chat/completions HTTP/1.1\r\n" + H
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
AUTH = b"Authorization: Bearer " + TEST_KEY.encode() + b"\r\n"


def settings(monkeypatch, **values: Any) -> dict[str, Any]:
    """``ServerConfig`` keyword arguments, checked to be real fields."""
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    for name in values:
        assert name in known, name
    return dict(values)


def chat(**fields: Any) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       **fields}).encode()


BIG_STREAM = dict(stream=True, mock={"chunks": 100_000, "content": "y" * 4_000_000,
                                     "chunk_delay_ms": 0.0001})
"""About 20 MB of SSE: far more than the socket buffers between Kraken and a client."""


def post_chat(body: bytes) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: kraken\r\n" + AUTH
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


async def raw_socket(port: int, rcvbuf: int | None = None, family=socket.AF_INET,
                     host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return sock


async def read_until_closed(sock: socket.socket, timeout: float) -> int:
    """Read everything until the peer closes (EOF or reset); fails if it never does."""
    loop = asyncio.get_running_loop()
    total = 0
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await loop.sock_recv(sock, 1 << 20)
            except ConnectionResetError:
                return total
            if not data:
                return total
            total += len(data)


# ---- slow read: a client that never reads is dropped --------------------------------------
STALL = 1.0


async def test_h1_client_that_never_reads_a_stream_is_dropped_with_the_provider_call(
        tmp_path, monkeypatch):
    server = settings(monkeypatch, send_stall_timeout_s=STALL)
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port, server=server)) as k:
            loop = asyncio.get_running_loop()
            sock = await raw_socket(k.port, rcvbuf=4096)
            try:
                t0 = time.monotonic()
                await loop.sock_sendall(sock, post_chat(chat(**BIG_STREAM)))
                await wait_for(lambda: mock.requests and mock._conns, 10)
                # The client reads nothing: Kraken fills the socket buffers, pauses the
                # provider, and after STALL seconds of that drops both connections.
                await wait_for(lambda: not mock._conns, STALL + 15)
                elapsed = time.monotonic() - t0
                assert elapsed >= STALL
                received = await read_until_closed(sock, timeout=10)
            finally:
                sock.close()
            (row,) = await wait_rows(k.db_path, 1)
    assert row["error_type"] == "client_cancelled" and row["status"] == 200
    assert received > 0
    assert not mock.responses[0].body.endswith(b"data: [DONE]\n\n")  # cut, not finished


class Gate:
    """A producer: a handler writes only while it is open."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.pauses = 0

    def pause_reading(self) -> None:
        self.pauses += 1
        self.open.clear()

    def resume_reading(self) -> None:
        self.open.set()


async def test_h1_client_that_keeps_reading_slowly_is_not_dropped(monkeypatch):
    """Paused again and again, never for the stall timeout: the stream completes."""
    cfg = settings(monkeypatch, send_stall_timeout_s=0.5, write_buffer_high=64 * 1024)
    gate = Gate()
    chunks = 128  # 8 MiB: more than the kernel buffers, so writing does pause

    async def stream(req: Request, sink: H1Exchange) -> None:
        sink.start(200, [], None)
        sink.set_producer(gate)
        for _ in range(chunks):
            await gate.open.wait()
            sink.write(b"z" * 65536)
        sink.set_producer(None)
        sink.end()

    from h1wire import serve

    async with serve(stream, **cfg) as server:
        async with connect(server.port, rcvbuf=32768) as (reader, writer):
            writer.write(b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
            data = bytearray()
            async with asyncio.timeout(30):
                while chunk := await reader.read(1 << 20):
                    data += chunk
                    await asyncio.sleep(0.02)  # a few MB/s: slow, but steady
        (resp,) = parse_responses(bytes(data))
        assert len(resp.body) == chunks * 65536
        assert gate.pauses >= 1


async def test_h2_stream_without_window_is_reset_with_the_provider_call(tmp_path, monkeypatch):
    server = settings(monkeypatch, send_stall_timeout_s=STALL)
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port, server=server)) as k:
            async with h2_client(k.port, window=0, ack_data=False) as cl:
                auth = [("authorization", f"Bearer {TEST_KEY}"),
                        ("content-type", "application/json")]
                t0 = time.monotonic()
                sid = cl.request("POST", "/v1/chat/completions", chat(
                    stream=True, mock={"chunks": 20_000, "chunk_delay_ms": 0.0001}), auth)
                resp = await cl.response(sid, timeout=STALL + 15)
                elapsed = time.monotonic() - t0
                assert resp.status == 200 and resp.reset == 8  # RST_STREAM CANCEL
                assert elapsed >= STALL
                await wait_for(lambda: not mock._conns, 5)
                # the connection itself is fine: another stream, given a window, is served
                health = cl.request("GET", "/healthz")
                cl.h2.increment_flow_control_window(1 << 20, stream_id=health)
                cl.flush()
                assert (await cl.response(health)).status == 200
            (row,) = await wait_rows(k.db_path, 1)
    assert row["error_type"] == "client_cancelled"


async def test_h2_connection_whose_client_reads_nothing_is_aborted(monkeypatch):
    cfg = settings(monkeypatch, send_stall_timeout_s=STALL)
    cancelled = asyncio.Event()
    gate = Gate()

    async def flood(req: Request, sink: Any) -> None:
        sink.start(200, [], None)
        sink.set_producer(gate)
        try:
            for _ in range(2000):  # up to 128 MiB, only while the transport takes it
                await gate.open.wait()
                sink.write(b"f" * 65536)
            sink.end()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with h2_serve(flood, **cfg) as server:
        reader, writer = await asyncio.open_connection(
            sock=await raw_socket(server.port, rcvbuf=4096))
        try:
            import h2.config
            import h2.connection
            from h2.settings import SettingCodes

            cl = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding=None))
            cl.initiate_connection()
            cl.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            cl.increment_flow_control_window(2**31 - 1 - 65535)
            cl.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                (":authority", "k")], end_stream=True)
            writer.write(cl.data_to_send())
            t0 = time.monotonic()
            await asyncio.wait_for(cancelled.wait(), STALL + 15)  # never read a byte
            assert time.monotonic() - t0 >= STALL
            await eventually(lambda: not server.conns)
            assert gate.pauses == 1  # paused once, never resumed: the client read nothing
        finally:
            writer.close()


async def test_stall_lines_are_throttled_however_many_streams_and_connections_stall(
        monkeypatch, caplog):
    """One client can hold 100 streams on each of hundreds of connections without reading:
    every stalled stream and connection is reset, but they share one line per interval, the
    next naming how many were held back (they were one INFO line each)."""
    from h1wire import serve as h1_serve
    from kraken.http import connection
    from kraken.logs import Throttle

    now = [0.0]
    lines = Throttle(10.0, clock=lambda: now[0])
    monkeypatch.setattr(connection, "STALL_LINES", lines, raising=False)
    monkeypatch.setattr("kraken.http.h2.STALL_LINES", lines, raising=False)
    caplog.set_level(logging.INFO, "kraken.http")
    cfg = settings(monkeypatch, send_stall_timeout_s=0.2)

    async def flood(req: Request, sink: Any) -> None:  # writes while the client takes it
        gate = Gate()
        sink.start(200, [], None)
        sink.set_producer(gate)
        for _ in range(2000):
            await gate.open.wait()
            sink.write(b"f" * 65536)
        sink.end()

    async with h2_serve(flood, **cfg) as server:
        async with h2_client(server.port, window=0, ack_data=False) as cl:
            for sid in [cl.request("GET", "/") for _ in range(10)]:
                assert (await cl.response(sid)).reset == 8  # RST_STREAM CANCEL
    async with h1_serve(flood, **cfg) as server:
        socks = [await raw_socket(server.port, rcvbuf=4096) for _ in range(5)]
        try:
            for sock in socks:
                await asyncio.get_running_loop().sock_sendall(sock, b"GET / HTTP/1.1\r\n" + H
                                                              + b"\r\n")
            await wait_for(lambda: len(server.calls) == 5 and not server.conns, 15)  # aborted
        finally:
            for sock in socks:
                sock.close()
    now[0] += 10.0
    async with h2_serve(flood, **cfg) as server:
        async with h2_client(server.port, window=0, ack_data=False) as cl:
            assert (await cl.response(cl.request("GET", "/"))).reset == 8
    said = [r.getMessage() for r in caplog.records
            if "opened no window" in r.getMessage() or "read nothing" in r.getMessage()]
    assert len(said) == 2, said
    assert said[1].endswith("(14 more stalls since the last line)"), said


async def test_stall_timeout_zero_turns_the_check_off(monkeypatch):
    cfg = ServerConfig(**settings(monkeypatch, send_stall_timeout_s=0.0))
    conn = H1Connection(lambda r, s: None, cfg)  # type: ignore[arg-type,return-value]
    conn.pause_writing()
    assert conn._stall.timeout == 0


# ---- per-address connection cap -----------------------------------------------------------
def test_address_key_counts_ipv4_per_address_and_ipv6_per_64():
    assert address_key("192.0.2.1") == bytes([192, 0, 2, 1])
    assert address_key("192.0.2.1") != address_key("192.0.2.2")
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%lo") == address_key("fe80::2")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1")  # dual-stack socket
    assert address_key("") is None and address_key("/run/kraken.sock") is None


def test_limiter_forgets_an_address_when_its_last_connection_closes():
    limiter = ConnectionLimiter(2)
    a, b = address_key("192.0.2.1"), address_key("2001:db8::1")
    assert limiter.acquire(a) and limiter.acquire(a) and not limiter.acquire(a)
    assert limiter.acquire(b) and len(limiter) == 2
    limiter.release(a)
    assert limiter.acquire(a)
    for key in (a, a, b):
        limiter.release(key)
    assert len(limiter) == 0 and limiter.refused == 1
    unlimited = ConnectionLimiter(0)
    assert all(unlimited.acquire(a) for _ in range(1000)) and len(unlimited) == 0


@pytest.fixture(params=["selector", "cleartext"])
def via(request) -> str:
    """A TLS listener's first protocol (``ProtocolSelector``, here on cleartext), or a cleartext
    listener's (``cleartext_factory``: an ``H1Connection`` from the start)."""
    return request.param


@contextlib.asynccontextmanager
async def selector_listener(limiter: ConnectionLimiter, host: str = "127.0.0.1",
                            via: str = "selector", **cfg):
    """A listener wired like app.serve(), its connections sharing one limiter."""
    conns: set = set()

    async def handler(req: Request, sink: Any) -> None:
        body = b"ok"
        sink.start(200, [(b"content-type", b"text/plain")], len(body))
        sink.write(body)
        sink.end()

    loop = asyncio.get_running_loop()
    factory = (cleartext_factory(handler, ServerConfig(**cfg), conns, limiter=limiter)
               if via == "cleartext" else
               lambda: ProtocolSelector(handler, ServerConfig(**cfg), conns, limiter=limiter))
    listener = await loop.create_server(factory, host, 0)
    try:
        yield listener.sockets[0].getsockname()[1], conns
    finally:
        listener.close()
        for conn in list(conns):
            conn.abort()
        await listener.wait_closed()
        await asyncio.sleep(0)


async def get_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        await reader.readexactly(2)


async def test_connections_over_the_per_address_cap_get_503_and_are_closed(via):
    limiter = ConnectionLimiter(3)
    async with selector_listener(limiter, via=via) as (port, conns):
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(port)) for _ in range(2)]
            for reader, writer in clients:
                await get_ok(reader, writer)
            async with h2_client(port) as cl:  # HTTP/2 connections count the same
                assert (await cl.response(cl.request("GET", "/"))).status == 200
                assert limiter.open_from("127.0.0.1") == 3
                async with connect(port) as (reader, writer):
                    writer.write(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
                    data = await read_to_eof(reader)
                (resp,) = parse_responses(data)
                assert is_openai_error(resp, 503)
                assert resp.json()["error"]["code"] == "too_many_connections"
                assert resp.headers[b"connection"] == b"close"
                assert limiter.refused == 1 and limiter.open_from("127.0.0.1") == 3
            # the HTTP/2 connection closed: its place is free again
            await eventually(lambda: limiter.open_from("127.0.0.1") == 2)
            async with connect(port) as (reader, writer):
                await get_ok(reader, writer)
            reader, writer = clients[0]
            await get_ok(reader, writer)  # the first ones still work
        await eventually(lambda: len(limiter) == 0)
        assert not conns


async def test_connection_closed_before_choosing_a_protocol_releases_its_place(via):
    limiter = ConnectionLimiter(1)
    async with selector_listener(limiter, via=via) as (port, _):
        for _ in range(3):
            async with connect(port) as (reader, writer):
                writer.write(b"PRI * HT")  # could still be the HTTP/2 preface
                await eventually(lambda: limiter.open_from("127.0.0.1") == 1)
            await eventually(lambda: len(limiter) == 0)
        async with connect(port) as (reader, writer):
            await get_ok(reader, writer)


async def test_ipv6_peer_is_counted_under_its_64(via):
    limiter = ConnectionLimiter(1)
    async with selector_listener(limiter, host="::1", via=via) as (port, _):
        first = await raw_socket(port, family=socket.AF_INET6, host="::1")
        try:
            await eventually(lambda: limiter.open_from("::1") == 1)
            assert limiter.open_from("::2") == 1  # same /64
            reader, writer = await asyncio.open_connection(
                sock=await raw_socket(port, family=socket.AF_INET6, host="::1"))
            data = await read_to_eof(reader)
            writer.close()
            assert parse_responses(data)[0].status == 503
        finally:
            first.close()
        await eventually(lambda: len(limiter) == 0)


async def test_a_flood_of_connections_keeps_memory_bounded(via):
    limiter = ConnectionLimiter(5)
    async with selector_listener(limiter, via=via) as (port, conns):
        socks = []
        try:
            for _ in range(60):
                socks.append(await raw_socket(port))
            await eventually(lambda: limiter.refused == 55)
            assert limiter.open_from("127.0.0.1") == 5 and len(limiter) == 1
        finally:
            for sock in socks:
                sock.close()
        await eventually(lambda: len(limiter) == 0 and not conns)


# ---- slowloris and slow POST --------------------------------------------------------------
ATTACKERS = 50
HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SLACK = 2.0


async def slowloris(port: int) -> tuple[float, bytes]:
    """Send a head one header line every 100 ms, never the blank line."""
    async with connect(port) as (reader, writer):
        t0 = time.monotonic()

        async def trickle() -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\n" + H)
            for i in range(300):
                writer.write(b"X-%d: y\r\n" % i)
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        try:
            data = await read_to_eof(reader, timeout=HEAD_TIMEOUT + SLACK + 3)
        finally:
            sender.cancel()
        return time.monotonic() - t0, data


async def slow_post(port: int) -> tuple[float, bytes]:
    """Send a whole head announcing 10 kB, then one body byte every 100 ms."""
    async with connect(port) as (reader, writer):
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\n" + H + AUTH
                     + b"Content-Length: 10000\r\n\r\n")
        t0 = time.monotonic()

        async def trickle() -> None:
            for _ in range(300):
                writer.write(b"{")
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        try:
            data = await read_to_eof(reader, timeout=BODY_TIMEOUT + SLACK + 3)
        finally:
            sender.cancel()
        return time.monotonic() - t0, data


async def test_slowloris_and_slow_post_are_cut_while_normal_clients_are_served(
        tmp_path, monkeypatch):
    # body_idle_timeout_s is long: the body trickles steadily, so only its pace can cut it.
    server = settings(monkeypatch, head_timeout_s=HEAD_TIMEOUT, body_idle_timeout_s=30.0,
                      body_timeout_s=BODY_TIMEOUT, body_min_rate_bytes_s=1024)
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port, server=server)) as k:
            attack = [asyncio.create_task(slowloris(k.port) if i % 2 else slow_post(k.port))
                      for i in range(ATTACKERS)]
            served = []
            loop = asyncio.get_running_loop()
            while not all(t.done() for t in attack) and len(served) < 100:
                t0 = loop.time()
                async with connect(k.port) as (reader, writer):
                    writer.write(post_chat(chat()).replace(b"Host: kraken\r\n",
                                                           b"Host: kraken\r\nConnection: close\r\n"))
                    (resp,) = parse_responses(await read_to_eof(reader))
                assert resp.status == 200
                served.append(loop.time() - t0)
                await asyncio.sleep(0.05)
            results = await asyncio.gather(*attack)
    for i, (elapsed, data) in enumerate(results):
        kind = "slowloris" if i % 2 else "slow POST"
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, 408), (kind, resp)
        limit = HEAD_TIMEOUT if i % 2 else BODY_TIMEOUT
        assert limit - 0.1 <= elapsed < limit + SLACK, (kind, elapsed)
    assert len(served) >= 5
    assert max(served) < 1.0, served  # answered during the attack, not after it
    assert len(mock.requests) == len(served)  # no attacker got through


async def test_slow_post_on_http2_is_cut_by_its_pace(monkeypatch):
    cfg = settings(monkeypatch, body_idle_timeout_s=30.0, body_timeout_s=BODY_TIMEOUT,
                   body_min_rate_bytes_s=1024)
    async with h2_serve(**cfg) as server, h2_client(server.port) as cl:
        sid = cl.request("POST", "/", headers=[("content-length", "10000")], end=False)
        resp = cl.responses[sid]
        t0 = time.monotonic()
        for _ in range(int((BODY_TIMEOUT + SLACK) / 0.1)):  # one byte every 100 ms
            cl.h2.send_data(sid, b"{")
            cl.flush()
            with contextlib.suppress(TimeoutError):
                await cl.pump(lambda: resp.ended or resp.reset is not None, timeout=0.1)
            if resp.ended or resp.reset is not None:
                break
        elapsed = time.monotonic() - t0
    assert resp.status == 408
    assert BODY_TIMEOUT - 0.1 <= elapsed < BODY_TIMEOUT + SLACK
    assert server.calls == []


async def test_a_body_at_the_minimum_pace_is_not_cut(monkeypatch):
    """Past body_timeout_s, a body still arriving at the minimum rate goes on."""
    from h1wire import serve

    cfg = settings(monkeypatch, body_timeout_s=0.3, body_min_rate_bytes_s=100)
    async with serve(**cfg) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 200\r\n\r\n")
            for _ in range(10):  # 20 bytes every 100 ms = 200 B/s, for a second
                writer.write(b"x" * 20)
                await asyncio.sleep(0.1)
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert server.calls[0].body == b"x" * 200


# ---- request smuggling: variants test_h1_malformed.py does not list -----------------------
SMUGGLING: list[tuple[str, bytes, int]] = [
    # CL.TE and TE.CL as sent by attack tools: the smuggled prefix must never be read
    ("cl-te-smuggled-prefix", POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nG", 400),
    ("te-cl-smuggled-request", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
     b"5c\r\nGPOST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
     b"Content-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n", 400),
    ("cl-te-mixed-case-names", POST + b"content-LENGTH: 3\r\ntransfer-ENCODING: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 400),
    # obfuscated Transfer-Encoding
    ("te-chunked-then-identity-line", POST + b"Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-gzip-chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400),
    ("te-leading-comma", POST + b"Transfer-Encoding: , chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-empty", POST + b"Transfer-Encoding: \r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    ("te-in-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     400),
    # lengths Python's int() would take
    ("cl-underscore", POST + b"Content-Length: 1_0\r\n\r\n0123456789", 400),
    ("cl-superscript-digit", POST + b"Content-Length: \xc2\xb2\r\n\r\nab", 400),
    ("cl-nbsp", POST + b"Content-Length: \xa03\r\n\r\nabc", 400),
    ("chunk-size-plus", CHUNKED + b"+3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-underscore", CHUNKED + b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n", 400),
    ("chunk-size-leading-space", CHUNKED + b" 3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-trailing-space", CHUNKED + b"3 \r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-size-16-hex-digits-overflow", CHUNKED + b"8000000000000000\r\nabc\r\n0\r\n\r\n",
     400),
    # chunk extensions and the last chunk
    ("chunk-ext-bare-cr", CHUNKED + b"3;a\rb\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-ext-nul", CHUNKED + b"3;a\x00b\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk-ext-lf-in-quoted-string", CHUNKED + b'3;a="x\ny"\r\nabc\r\n0\r\n\r\n', 400),
    ("chunk-ext-over-4k", CHUNKED + b"3;" + b"e" * 5000 + b"\r\nabc\r\n0\r\n\r\n", 400),
    ("last-chunk-bare-lf", CHUNKED + b"3\r\nabc\r\n0\n\r\n", 400),
    ("last-chunk-ext-bare-lf", CHUNKED + b"3\r\nabc\r\n0;x\n\r\n", 400),
    # trailers (h11 accepts all of these)
    ("trailer-bare-lf", CHUNKED + b"3\r\nabc\r\n0\r\nX: y\n\r\n", 400),
    ("trailer-obs-fold", CHUNKED + b"3\r\nabc\r\n0\r\nX: a\r\n b\r\n\r\n", 400),
    ("trailer-space-before-colon", CHUNKED + b"3\r\nabc\r\n0\r\nX : y\r\n\r\n", 400),
    ("trailer-without-colon", CHUNKED + b"3\r\nabc\r\n0\r\nX y\r\n\r\n", 400),
    ("trailer-control-byte", CHUNKED + b"3\r\nabc\r\n0\r\nX: a\x01b\r\n\r\n", 400),
    ("trailer-over-16k", CHUNKED + b"3\r\nabc\r\n0\r\nX: " + b"t" * 17_000 + b"\r\n\r\n", 431),
    # Host
    ("host-duplicate-same-value", b"GET / HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n",
     400),
    ("host-two-values", b"GET / HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n", 400),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: a.example b.example\r\n\r\n", 400),
    ("host-with-userinfo", b"GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n", 400),
    # other field bytes h11 lets through
    ("header-value-control-byte", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\x01b\r\n\r\n", 400),
    ("header-value-del", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: a\x7fb\r\n\r\n", 400),
    ("http-version-2-over-h1", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
]


@pytest.mark.parametrize("raw, status", [pytest.param(*c[1:], id=c[0]) for c in SMUGGLING])
async def test_smuggling_variant_is_refused_and_closed(raw: bytes, status: int):
    from h1wire import serve

    async with serve(max_body_bytes=1000, head_timeout_s=30.0, body_idle_timeout_s=30.0) as server:
        async with connect(server.port) as (reader, writer):
            writer.write(raw)
            data = await read_to_eof(reader)
        (resp,) = parse_responses(data)
        assert is_openai_error(resp, status), resp
        assert resp.headers[b"connection"] == b"close"
        assert server.calls == []


ACCEPTED: list[tuple[str, bytes, bytes]] = [
    ("te-uppercase", POST + b"Transfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("te-trailing-space", POST + b"Transfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     b"abc"),
    ("cl-leading-zeros", POST + b"Content-Length: 003\r\n\r\nabc", b"abc"),
    ("chunk-size-uppercase-hex", CHUNKED + b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("chunk-ext-quoted-with-bws", CHUNKED + b'3 ; name = "v a;l"\r\nabc\r\n0;last\r\n\r\n',
     b"abc"),
    ("trailer-fields", CHUNKED + b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other:\tv\r\n\r\n",
     b"abc"),
    ("host-with-port", b"POST / HTTP/1.1\r\nHost: a.example:8080\r\nContent-Length: 1\r\n\r\nx",
     b"x"),
    ("host-ipv6-literal", b"POST / HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 1\r\n\r\nx",
     b"x"),
    ("header-obs-text", POST + b"X-Name: caf\xc3\xa9\r\nContent-Length: 1\r\n\r\nx", b"x"),
]


@pytest.mark.parametrize("raw, body", [pytest.param(*c[1:], id=c[0]) for c in ACCEPTED])
async def test_strictness_keeps_valid_framing(raw: bytes, body: bytes):
    from h1wire import serve

    async with serve() as server:
        async with connect(server.port) as (reader, writer):
            writer.write(raw)
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert server.calls[0].body == body


def test_chunked_decoder_gives_the_same_body_fed_byte_by_byte():
    wire = (b"5;a=b\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nT: v\r\n\r\n"
            b"GET /next HTTP/1.1\r\n")
    whole, out = ChunkedBody(1000, 1000), []
    assert whole.feed(wire, out) == b"GET /next HTTP/1.1\r\n"
    assert b"".join(out) == b"hello world!"
    split, parts = ChunkedBody(1000, 1000), []
    for i in range(len(wire)):
        if (rest := split.feed(wire[i:i + 1], parts)) is not None:
            break
    assert b"".join(parts) == b"hello world!"
    assert rest == b"" and wire[i + 1:] == b"GET /next HTTP/1.1\r\n"


def test_chunked_decoder_refuses_a_chunk_over_the_limit_before_its_data():
    with pytest.raises(BodyRejected) as info:
        ChunkedBody(10, 100).feed(b"5\r\nhello\r\n6\r\n", [])
    assert info.value.status == 413


def test_fixed_body_returns_what_follows_it():
    body, out = FixedBody(5), []
    assert body.feed(b"hel", out) is None
    assert body.feed(b"loGET", out) == b"GET"
    assert out == [b"hel", b"lo"]
    assert FixedBody(0).feed(b"next", []) == b"next"


async def test_records_are_untouched_by_refused_requests(tmp_path):
    """A smuggling attempt through the real gateway reaches neither the provider nor the store."""
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            body = chat()
            raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: kraken\r\n" + AUTH
                   + b"Transfer-Encoding: chunked\r\n\r\n%x;x\ry\r\n%s\r\n0\r\n\r\n"
                   % (len(body), body))
            async with connect(k.port) as (reader, writer):
                writer.write(raw)
                (resp,) = parse_responses(await read_to_eof(reader))
            assert resp.status == 400
            await asyncio.sleep(0.1)
            assert db_rows(k.db_path) == []
    assert len(mock.requests) == 0


async def test_server_max_connections_per_ip_caps_a_real_kraken(tmp_path, monkeypatch):
    server = settings(monkeypatch, max_connections_per_ip=2)
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port, server=server)) as k:
            async with connect(k.port) as first, connect(k.port) as second:
                for reader, writer in (first, second):
                    writer.write(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 ")
                    await reader.readexactly(15)  # {"status":"ok"}
                async with connect(k.port) as (reader, writer):
                    writer.write(b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
                    (resp,) = parse_responses(await read_to_eof(reader))
                assert is_openai_error(resp, 503)
                assert resp.json()["error"]["code"] == "too_many_connections"
