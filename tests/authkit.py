"""Helpers for per-address authentication tests: requests from a chosen loopback source
address (Linux routes all of 127/8 to loopback, so a socket bound to 127.0.0.2 is another
client address to Kraken) and samples of a process's own /metrics."""
from __future__ import annotations

import asyncio
import json

import h11
from prometheus_client.parser import text_string_to_metric_families

from harness import Reply, http


async def request_from(port: int, method: str, path: str, *, source: str = "127.0.0.1",
                       headers: dict[str, str] | None = None, body: bytes = b"",
                       timeout: float = 30.0) -> Reply:
    """One request to 127.0.0.1:``port`` on a fresh connection bound to ``source``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    conn = h11.Connection(h11.CLIENT)
    hdrs = [("host", "127.0.0.1"), ("connection", "close"), ("content-length", str(len(body)))]
    hdrs += list((headers or {}).items())
    writer.write(conn.send(h11.Request(method=method, target=path, headers=hdrs))
                 + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
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


async def chat_from(port: int, key: str, *, source: str = "127.0.0.1",
                    timeout: float = 30.0) -> Reply:
    """A chat completion with ``key`` as the Bearer credential, sent from ``source``."""
    body = json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]})
    return await request_from(port, "POST", "/v1/chat/completions", source=source,
                              headers={"authorization": f"Bearer {key}",
                                       "content-type": "application/json"},
                              body=body.encode(), timeout=timeout)


async def metric(port: int, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of the process's /metrics (0 when absent)."""
    text = (await http(port, "GET", "/metrics")).body.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return 0.0
