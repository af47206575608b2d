"""Revocation propagation: every Kraken process forgets a revoked key within 1 s.

Writers never talk to gateways directly. Triggers append a ``key_events`` row whenever a key
row changes or disappears (revoke, delete, cascades, new limits, a customer's plan or
opt-out); each process polls that table every 250 ms - one indexed range read, off the hot
path - and evicts the keys from its verifier. Processes on other hosts share the database
(or, with Redis configured, also hear ``publish``ed key ids on a pub/sub channel at once).
Old events are purged after an hour: a process that lost its place just starts from the end,
because a fresh verifier has nothing cached.

Event numbers are handed out when a row is written, not when its transaction commits: on
PostgreSQL a long transaction (an erasure) can commit its events after a quicker one's later
numbers were polled. So every number skipped below the newest one seen is looked for again at
each poll, until it appears or an hour has passed (a rolled-back transaction's never does).
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

import anyio

from kraken.metrics import KEY_EVICTIONS

log = logging.getLogger("kraken.accounts.revocation")

CHANNEL = "kraken:key-events"
POLL_INTERVAL_S = 0.25
EVENTS_KEPT_S = 3600.0
PURGE_EVERY_S = 60.0
BATCH = 1000
GAPS_KEPT_S = EVENTS_KEPT_S
MAX_GAPS = 1000
"""Skipped numbers looked for again at once (the newest kept): one bounded IN read a poll."""
_POLLED = KEY_EVICTIONS.labels("poll")
_HEARD = KEY_EVICTIONS.labels("redis")


async def publish(redis_url: str, key_ids: Iterable[str]) -> None:
    """Tell every subscribed process to evict ``key_ids`` now. Best effort: the key_events
    poll is the guarantee, so a Redis failure is logged (without ids) and not raised."""
    payload = ",".join(key_ids)
    if not payload:
        return
    import redis.asyncio as aioredis

    try:
        client = aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            await client.publish(CHANNEL, payload)
        finally:
            await client.aclose()
    except Exception as exc:  # noqa: BLE001 - any Redis failure; the poll still delivers
        log.warning("revocation publish to redis failed (%s); processes will poll it",
                    type(exc).__name__)


class RevocationWatcher:
    """Feeds key events into ``verifier.evict``. ``await start()`` then ``run()`` as a task."""

    def __init__(self, store, verifier, *, redis_url: str | None = None,
                 interval_s: float = POLL_INTERVAL_S) -> None:
        self._store = store
        self._accounts = store.accounts
        self._verifier = verifier
        self._redis_url = redis_url or None
        self._interval = interval_s
        self._seq = 0
        self._gaps: dict[int, float] = {}
        """Skipped event numbers (ascending) -> monotonic time to stop looking for them."""
        self._next_purge = time.monotonic() + PURGE_EVERY_S

    async def start(self) -> None:
        """Start from the newest event committed: nothing is cached yet, so older ones do not
        matter. Not from the newest number handed out, which on PostgreSQL may belong to a
        transaction still open (a revocation while this process starts): the first polls must
        still see it commit. With every event purged, from the newest handed out (even if
        purged since), so that none below it is taken for a gap."""
        newest = await self._accounts.newest_key_event(self._store)
        self._seq = newest or await self._accounts.last_key_event(self._store)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            if self._redis_url:
                tg.start_soon(self._subscribe)
            while True:
                try:
                    await self.poll_once()
                    await self._purge()
                except Exception as exc:  # noqa: BLE001 - keep polling through store hiccups
                    log.warning("key event poll failed: %s", type(exc).__name__)
                await anyio.sleep(self._interval)

    async def poll_once(self) -> int:
        """Evict keys named by events newer than the last seen, or by skipped numbers that
        have committed since; returns how many events."""
        total = await self._poll_gaps()
        while True:
            rows = await self._accounts.key_events_after(self._store, self._seq, BATCH)
            if not rows:
                return total
            self._note_gaps(rows)
            self._verifier.evict(key_id for _, key_id in rows)
            self._seq = rows[-1][0]
            total += len(rows)
            _POLLED.inc(len(rows))
            if len(rows) < BATCH:
                return total

    def _note_gaps(self, rows: list[tuple]) -> None:
        """Remember the numbers ``rows`` skip: their transactions may commit later."""
        expected = self._seq + 1
        until = time.monotonic() + GAPS_KEPT_S
        for seq, _key_id in rows:
            for missing in range(max(expected, seq - MAX_GAPS), seq):
                self._gaps[missing] = until
            expected = seq + 1
        while len(self._gaps) > MAX_GAPS:  # the oldest go first
            del self._gaps[next(iter(self._gaps))]

    async def _poll_gaps(self) -> int:
        """Evict keys named by skipped numbers that have committed since; forget old gaps."""
        now = time.monotonic()
        for seq in [s for s, until in self._gaps.items() if until <= now]:
            del self._gaps[seq]
        if not self._gaps:
            return 0
        rows = await self._accounts.key_events_in(self._store, list(self._gaps))
        for seq, _key_id in rows:
            self._gaps.pop(seq, None)
        if rows:
            self._verifier.evict(key_id for _, key_id in rows)
            _POLLED.inc(len(rows))
        return len(rows)

    async def _purge(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        cutoff = time.time() - EVENTS_KEPT_S
        # Take the write lock only when there is something to delete (a read first): N
        # processes polling must not contend with the metadata writer every minute.
        if await self._accounts.key_events_before(self._store, cutoff):
            async with self._store.transaction() as tx:
                await tx.accounts.purge_key_events(tx, cutoff)

    async def _subscribe(self) -> None:
        import redis.asyncio as aioredis

        delay = 0.1
        while True:
            client = aioredis.from_url(self._redis_url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    delay = 0.1
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data = message["data"]
                        ids = (data.decode("ascii", "replace") if isinstance(data, bytes)
                               else str(data)).split(",")
                        self._verifier.evict(ids)
                        _HEARD.inc(len(ids))
            except Exception as exc:  # noqa: BLE001 - reconnect; the poll covers the gap
                log.warning("revocation subscription to redis failed (%s); retrying",
                            type(exc).__name__)
            finally:
                await client.aclose()
            await anyio.sleep(delay)
            delay = min(delay * 2, 5.0)
