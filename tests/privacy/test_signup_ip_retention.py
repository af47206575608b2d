"""'Rate limit data (IP addresses): automatically expires after 1 hour', for the sign-up
limiter too: it counts a keyed hash of the client address (data derived from the address),
and that entry is forgotten when its window ends even if no other sign-up request ever comes
(nothing else sweeps it).

The limiter is the one a real Kraken (in this event loop) serves sign-up with; it is found
among the live objects, not built by the test. Its window is the module's one-hour
``WINDOW_S``, set to half a second here so the test's hour passes quickly."""
from __future__ import annotations

import gc
import json

import pytest

from harness import free_port, http, kraken_mapping, running_kraken, running_mock, wait_for
from kraken.gateway.endpoints import account_signup
from kraken.policy.ratelimit import MemoryLimiter

pytestmark = pytest.mark.anyio

WINDOW_S = 0.5
"""The sign-up limiter's window: the test's hour."""


def _address_entries() -> list[str]:
    """Hashed client addresses that live in-memory limiters still hold (the sign-up limiter
    counts them as ``ip:<hash>``; Kraken froze its startup objects: ``gc.unfreeze``)."""
    gc.unfreeze()
    return [key for o in gc.get_objects() if isinstance(o, MemoryLimiter)
            for key in o._keys if key.startswith("ip:")]


async def test_a_signup_address_is_forgotten_when_its_window_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(account_signup, "WINDOW_S", WINDOW_S)
    email = {"signup": True, "host": "127.0.0.1", "port": free_port(), "starttls": False,
             "from_address": "kraken@example.com", "base_url": "https://kraken.example.com"}
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port, email=email)) as k:
            # counted against the address before the address is read: no mail is sent
            reply = await http(k.port, "POST", account_signup.PATH,
                               json.dumps({"email": "not-an-address"}).encode(),
                               {"content-type": "application/json"})
            assert reply.status == 400, reply.body
            await wait_for(_address_entries)  # the request counts against its address
            # no other sign-up comes: the window's end alone forgets the address's hash
            await wait_for(lambda: not _address_entries(), seconds=WINDOW_S + 5)
