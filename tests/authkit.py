"""Helpers for per-address authentication tests: requests from a chosen loopback source
address (Linux routes all of 127/8 to loopback, so a socket bound to 127.0.0.2 is another
client address to Kraken) and samples of a process's own /metrics."""
from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from harness import Reply, http


async def request_from(port: int, method: str, path: str, *, source: str = "127.0.0.1",
                       headers: dict[str, str] | None = None, body: bytes = b"",
                       timeout: float = 30.0) -> Reply:
    """One request to 127.0.0.1:``port`` on a fresh connection bound to ``source``."""
    return await http(port, method, path, body, headers, timeout, source=source)


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
