"""Decrypted BYOK keys on the hot path: in memory only, bounded, and never stale for long.

An LRU of customer id -> {provider kind: key} with a TTL. A hit costs a dict lookup; a miss
reads the customer's rows once (concurrent misses for the same customer share one load) and
decrypts them. Customers without BYOK keys are cached too (an empty entry), and while no key
is stored at all no lookup happens. One background task polls ``byok_state`` (one row) and
drops the whole cache when its generation moves, so a set, delete, rotate or cascade made by
any process (CLI, admin API, another worker) takes effect within ``poll_interval_s``.
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from types import MappingProxyType
from typing import Callable, Mapping

import anyio
from anyio.abc import TaskStatus

from kraken import errors, metrics
from kraken.accounts import byok
from kraken.accounts.byok import ByokKeyUnusable
from kraken.accounts.masterkey import Keyring

log = logging.getLogger("kraken.byok")

_HIT = metrics.BYOK_CACHE.labels("hit")
_MISS = metrics.BYOK_CACHE.labels("miss")
_NONE_STORED = metrics.BYOK_CACHE.labels("none_stored")

Keys = Mapping[str, "str | ByokKeyUnusable"]
NO_KEYS: Keys = MappingProxyType({})


class ByokCache:
    """Per-process cache of decrypted BYOK keys (see the module docstring)."""

    def __init__(self, store, keyring: Keyring | None, *, max_entries: int = 10_000,
                 ttl_s: float = 300.0, poll_interval_s: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._keyring = keyring
        self._max = max(1, max_entries)
        self._ttl = ttl_s
        self._poll = poll_interval_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Keys]] = OrderedDict()
        self._loads: dict[str, asyncio.Task] = {}
        self._generation: int | None = None
        self._stored: int | None = None
        """Keys stored in the database at the last poll; None = not polled yet (assume some)."""
        ref = weakref.ref(self)
        metrics.BYOK_CACHE_SIZE.set_function(lambda: len(c._entries) if (c := ref()) else 0)

    def __len__(self) -> int:
        return len(self._entries)

    def keys_now(self, customer_id: str | None) -> Keys | None:
        """``keys_for``'s answer if it needs no load (none stored, or a fresh entry), else None:
        await ``keys_for``. Asked first, so a hit awaits no coroutine that never waits."""
        if customer_id is None or self._stored == 0:
            _NONE_STORED.inc()
            return NO_KEYS
        entry = self._entries.get(customer_id)
        if entry is not None and entry[0] > self._clock():
            self._entries.move_to_end(customer_id)
            _HIT.inc()
            return entry[1]
        return None

    async def keys_for(self, customer_id: str | None) -> Keys:
        """provider kind -> key (or ``ByokKeyUnusable``) for this customer; no I/O on a hit."""
        keys = self.keys_now(customer_id)
        if keys is not None:
            return keys
        _MISS.inc()
        task = self._loads.get(customer_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(customer_id))
            self._loads[customer_id] = task
            task.add_done_callback(lambda _t, c=customer_id: self._loads.pop(c, None))
        # Shielded: a caller that goes away does not cancel the load others wait on.
        return await asyncio.shield(task)

    async def _load(self, customer_id: str) -> Keys:
        generation = self._generation
        try:
            found = await byok.keys_of(self._store, self._keyring, customer_id)
        except Exception:  # noqa: BLE001 - store unavailable: a 503, never a 500
            metrics.BYOK_ERRORS.labels("load").inc()
            raise errors.Overloaded("Provider keys are unavailable; retry shortly.") from None
        for provider_kind, value in found.items():
            if isinstance(value, ByokKeyUnusable):
                metrics.BYOK_ERRORS.labels("unusable").inc()
                log.error("BYOK key of customer %s for %s is unusable: %s",
                          customer_id, provider_kind, value.message)
        keys: Keys = MappingProxyType(found) if found else NO_KEYS
        if generation == self._generation:  # a change seen meanwhile: serve it, don't keep it
            self._entries[customer_id] = (self._clock() + self._ttl, keys)
            self._entries.move_to_end(customer_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return keys

    def clear(self) -> None:
        """Drop every decrypted key (also called after in-process admin changes)."""
        self._entries.clear()

    async def poll(self) -> None:
        """Read the change counter once; drop the cache if anything changed since last time."""
        generation, stored = await byok.state(self._store)
        if generation != self._generation:
            self._entries.clear()
            self._generation = generation
        self._stored = stored

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The poller task: first poll before reporting started, then every ``poll_interval_s``."""
        try:
            await self.poll()
        except Exception as exc:  # the store may be busy: keep going, assume keys exist
            metrics.BYOK_ERRORS.labels("poll").inc()
            log.warning("BYOK change poll failed: %s", type(exc).__name__)
        if self._keyring is None and self._stored:
            log.error("%d BYOK key(s) are stored but no [byok] master key is configured: "
                      "their customers' requests to those providers fail until it is", self._stored)
        task_status.started()
        while True:
            await anyio.sleep(self._poll)
            try:
                await self.poll()
            except Exception as exc:
                # The store is away (restart, network): keep serving what is cached, each
                # entry still bounded by its TTL. A change committed before the outage and not
                # yet polled is at most one poll interval old; none can be committed during it
                # (so the stored-key count last read also still holds).
                metrics.BYOK_ERRORS.labels("poll").inc()
                log.warning("BYOK change poll failed: %s", type(exc).__name__)
