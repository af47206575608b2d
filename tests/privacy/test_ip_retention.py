"""'Rate limit data (IP addresses): automatically expires after 1 hour', for the embedded
(in-memory) limiter too: a client address that failed to authenticate once is forgotten when
its window ends, even if no other address ever fails again (nothing else sweeps it).

The limiter is the one a real Kraken (in this event loop) serves with; it is found among the
live objects, not built by the test. Redis keys' TTLs: tests/policy/test_redis_limits.py."""
from __future__ import annotations

import gc
import json

import pytest

from harness import auth_headers, http, kraken_mapping, running_kraken, running_mock, wait_for
from kraken.accounts.keys import generate_key
from kraken.policy.ratelimit import MemoryLimiter

pytestmark = pytest.mark.anyio

WINDOW_S = 0.5
"""``[limits] ip_window_s``: the test's hour."""


def _holding(address: str) -> list[MemoryLimiter]:
    """Live in-memory limiters that still hold rate-limit data about ``address`` (Kraken froze
    its startup objects out of the collector's sight: ``gc.unfreeze`` lists them again)."""
    gc.unfreeze()
    return [o for o in gc.get_objects()
            if isinstance(o, MemoryLimiter) and address in o._ips]


async def test_an_address_that_failed_once_is_forgotten_when_its_window_ends(tmp_path):
    doc = kraken_mapping(tmp_path, 0, limits={"ip_window_s": WINDOW_S, "ip_auth_failures": 5})
    async with running_mock() as mock:
        doc["providers"]["mockai"]["base_url"] = f"http://127.0.0.1:{mock.port}/v1"
        async with running_kraken(doc) as k:
            body = json.dumps({"model": "mock-gpt", "messages": []}).encode()
            reply = await http(k.port, "POST", "/v1/chat/completions", body,
                               auth_headers(generate_key("nobody", env="test")))
            assert reply.status == 401
            await wait_for(lambda: _holding("127.0.0.1"))  # the failure counts against it
            # no other address fails, no other request comes: the window's end alone forgets it
            await wait_for(lambda: not _holding("127.0.0.1"), seconds=WINDOW_S + 5)
