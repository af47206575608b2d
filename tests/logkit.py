"""Helpers for log tests: ``kraken serve`` as a real subprocess with stdout and stderr
captured apart (request lines vs. process log), and clients for every inbound transport
(HTTP/1.1 or HTTP/2, cleartext or TLS) so a test can read what each path writes to the logs."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import h2.config
import h2.connection
import h2.events

from harness import Reply, http, write_toml


@contextlib.asynccontextmanager
async def kraken_process(tmp: Path, doc: dict, args: tuple[str, ...] = (), *, name: str = "k",
                         env: Mapping[str, str] | None = None,
                         tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """``python -m kraken serve`` writing ``<name>.stdout.log`` and ``<name>.stderr.log``;
    yields the port once /readyz answers 200 (over TLS with ``tls``); SIGTERM on exit and
    the process must exit 0."""
    write_toml(tmp / f"{name}.toml", doc)
    out, err = open(tmp / f"{name}.stdout.log", "wb"), open(tmp / f"{name}.stderr.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kraken", *args, "serve", "--config",
                             str(tmp / f"{name}.toml")], stdout=out, stderr=err,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    out.close()
    err.close()
    port = doc["server"]["port"]

    async def ready() -> bool:
        assert proc.poll() is None, (tmp / f"{name}.stderr.log").read_text()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
            return (await h1_request(port, "GET", "/readyz", tls=tls, timeout=2)).status == 200
        return False

    try:
        with anyio.fail_after(20):
            while not await ready():
                await anyio.sleep(0.05)
        yield port
        proc.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _open(port: int, tls: ssl.SSLContext | None):
    if tls is None:
        return await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.open_connection("127.0.0.1", port, ssl=tls, server_hostname="localhost")


async def h1_request(port: int, method: str, path: str, body: bytes = b"",
                     headers: Mapping[str, str] | None = None, *,
                     tls: ssl.SSLContext | None = None, timeout: float = 10.0) -> Reply:
    """One HTTP/1.1 request on a fresh connection (TLS with ``tls``), parsed by h11."""
    return await http(port, method, path, body, headers, timeout, tls=tls)


async def h2_request(port: int, method: str, path: str, body: bytes = b"",
             headers: Mapping[str, str] | None = None, *, tls: ssl.SSLContext | None = None,
             timeout: float = 10.0, validate: bool = True) -> Reply:
    """One HTTP/2 request: prior knowledge on cleartext, ALPN ``h2`` with ``tls``.
    ``validate=False`` sends header fields as given (malformed ones too); status 0 means
    the stream was reset or the connection closed before a response."""
    reader, writer = await _open(port, tls)
    if tls is not None:
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=validate,
        normalize_outbound_headers=validate))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    hdrs = [(":method", method), (":scheme", "http" if tls is None else "https"),
            (":path", path), (":authority", "localhost"), ("content-length", str(len(body))),
            *(headers or {}).items()]
    conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in hdrs], end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    writer.write(conn.data_to_send())
    status, out_headers, chunks, ended = 0, {}, [], False
    try:
        async with asyncio.timeout(timeout):
            while not ended:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        out_headers = {k.decode(): v.decode() for k, v in event.headers}
                        status = int(out_headers.pop(":status"))
                    elif isinstance(event, h2.events.DataReceived):
                        chunks.append(event.data)
                        conn.acknowledge_received_data(event.flow_controlled_length, sid)
                    elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset,
                                            h2.events.ConnectionTerminated)):
                        ended = True
                writer.write(conn.data_to_send())
    finally:
        writer.close()
    return Reply(status, out_headers, b"".join(chunks))
