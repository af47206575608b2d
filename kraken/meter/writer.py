"""The meter: a bounded in-memory queue in front of the store, drained by one writer task.

The hot path only ever calls ``reserve()`` (admission) and ``record()`` (completion):
both are synchronous and O(1). Admission reserves a slot, so a completed request always
has room and no record is ever dropped; when the queue is full Kraken refuses new requests
(503) instead. ``record()`` journals before it enqueues, so the rotated journal segments
always hold every record the writer has taken, and are deleted only after they commit.

A failed journal append (disk full) makes admission refuse too, until the writer's probe
finds the journal writable again: a record that cannot be journalled means the request is
refused, before its first byte. The few records completing just as the disk fills are kept
in memory (never dropped), counted, and journalled again once it recovers.

At shutdown ``close(timeout_s)`` gives up on a store that stays down: what is not committed
stays in the journal and is replayed at the next start.
"""
from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from kraken import metrics
from kraken.config import MeterConfig
from kraken.meter.journal import Journal, storable
from kraken.store.record import RequestRecord
from kraken.store.errors import StoreDataError, StoreError
from kraken.store.interface import Store, Tx

log = logging.getLogger("kraken.meter")

DEEP_BATCHES = 8
"""A deep queue is written in batches of up to this many times ``batch_max``."""


class BatchHook(Protocol):
    """Work done in the same transaction as each batch insert (kraken/billing/guard.py)."""

    async def in_batch(self, tx: Tx, records: Sequence[RequestRecord]) -> None: ...

    def committed(self) -> None: ...


class Meter:
    """Reservations, the record queue and the single batch-writer task."""

    def __init__(self, store: Store, journal: Journal, cfg: MeterConfig) -> None:
        self._store = store
        self._journal = journal
        self._cfg = cfg
        self._max = cfg.queue_max
        self._batch_max = max(1, cfg.batch_max)
        self._queue: deque[RequestRecord] = deque()  # bounded by reserve(), not maxlen
        self._inflight: list[RequestRecord] = []  # taken by the writer, not yet committed
        self._segments: list[Path] = []  # rotated segments holding _inflight
        self._reserved = 0
        self._store_ok = True
        self._journal_ok = True
        self._next_probe = 0.0  # monotonic time of the next journal probe while it is failing
        self._unjournaled: dict[str, RequestRecord] = {}
        """Queued or in-flight records whose journal append failed: kept until committed."""
        self.refusal = "queue_full"
        """Why the last ``reserve()`` refused: a ``kraken.shedding`` reason."""
        self._recovered = False
        self._running = False
        self._closing = False
        self._run_scope: anyio.CancelScope | None = None
        self._wake = anyio.Event()
        self._stopped = anyio.Event()
        self.billing: BatchHook | None = None
        """Wallet debits and monthly usage, applied in each batch's transaction (app wiring)."""
        ref = weakref.ref(self)
        metrics.QUEUE_DEPTH.set_function(lambda: m.depth if (m := ref()) is not None else 0)
        metrics.QUEUE_CAPACITY.set(cfg.queue_max)

    # -- hot path: synchronous, no I/O besides one journal write --------------------

    def reserve(self) -> bool:
        """Take a slot for a request being admitted; False means answer 503 (see ``refusal``)."""
        if not self._journal_ok:
            self.refusal = "journal_failed"
            return False
        if len(self._queue) + len(self._inflight) + self._reserved >= self._max:
            self.refusal = "queue_full"
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        """Give back a reservation that will not produce a record."""
        if self._reserved:
            self._reserved -= 1

    def record(self, rec: RequestRecord) -> None:
        """Journal then queue one completed request's record. Never awaits, never drops."""
        if self._reserved:
            self._reserved -= 1
        try:
            self._journal.append(rec)
        except (OSError, TypeError) as exc:  # TypeError: a value orjson cannot encode
            self._unjournaled[rec.request_id] = rec
            metrics.RECORDS_UNJOURNALED.inc()
            metrics.STORE_ERRORS.labels("journal").inc()
            if isinstance(exc, OSError):
                self._journal_failed(exc)
        self._queue.append(rec)
        if len(self._queue) >= self._batch_max:
            self._wake.set()

    def _journal_failed(self, exc: OSError) -> None:
        """Refuse admissions until a probe succeeds (once per failure, not per record)."""
        self._next_probe = time.monotonic() + self._cfg.retry_backoff_ms / 1000
        if self._journal_ok:
            self._journal_ok = False
            log.error("meter journal append failed (%s): refusing new requests until it "
                      "is writable again", exc.strerror or type(exc).__name__)

    @property
    def ready(self) -> bool:
        """Last store write (and journal append) succeeded and there is room for more."""
        return self._store_ok and self._journal_ok and self.depth < self._max

    @property
    def depth(self) -> int:
        """Records not yet committed plus reserved slots."""
        return len(self._queue) + len(self._inflight) + self._reserved

    # -- writer side ---------------------------------------------------------------

    async def recover(self) -> int:
        """Replay segments left by a previous run into the store, then delete them.

        Call before serving. Returns the number of rows newly inserted (a segment whose
        records were already committed before a crash replays as 0). A StoreError
        propagates and leaves the segments on disk for the next attempt.
        """
        replayed = 0
        for path in self._journal.segments():
            if path == self._journal.current:
                continue
            records = Journal.read(path)
            for i in range(0, len(records), self._batch_max):
                inserted = await self._insert(records[i : i + self._batch_max])
                metrics.RECORDS_REPLAYED.inc(inserted)
                replayed += inserted
            self._journal.remove([path])
        self._recovered = True
        if replayed:
            log.info("meter recovered %d records from the journal", replayed)
        return replayed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The single writer task; returns once close() was called and all is flushed
        (or close() gave up at its deadline).

        Runs recover() first if the application has not (so rotate() never deletes an
        unreplayed segment from a previous run).
        """
        if self._running:
            raise RuntimeError("Meter.run is already running")
        self._running = True
        self._stopped = anyio.Event()
        try:
            with anyio.CancelScope() as self._run_scope:
                if not self._recovered:
                    await self.recover()
                task_status.started()
                await self._write_loop()
        finally:
            self._run_scope = None
            self._running = False
            self._stopped.set()

    async def _write_loop(self) -> None:
        interval = self._cfg.flush_interval_ms / 1000
        while True:
            if not self._closing and not self._inflight and len(self._queue) < self._batch_max:
                with anyio.move_on_after(interval):
                    await self._wake.wait()
            self._wake = anyio.Event()
            self._check_journal()
            if await self._flush():
                if self._closing and not self._queue:
                    return
            else:
                await anyio.sleep(self._cfg.retry_backoff_ms / 1000)

    def _check_journal(self) -> None:
        """Probe a failing journal (at most every ``retry_backoff_ms``); once it is writable,
        admit again and journal the records that were kept only in memory."""
        if not self._journal_ok:
            if time.monotonic() < self._next_probe:
                return
            try:
                self._journal.probe()
            except OSError as exc:
                self._journal_failed(exc)
                return
            self._journal_ok = True
            log.warning("meter journal writable again: admitting requests")
        for rec in list(self._unjournaled.values()):
            try:
                self._journal.append(rec)
            except TypeError:
                pass  # never journalable; still written to the store
            except OSError as exc:
                self._journal_failed(exc)
                return
            del self._unjournaled[rec.request_id]

    async def close(self, timeout_s: float | None = None) -> int:
        """Flush everything (via run() if it is running), checkpoint, close the journal.

        Returns how many records are left uncommitted: 0 unless the store stayed down for
        ``timeout_s`` (the drain deadline). Those stay in the journal and are replayed at the
        next start; records whose append had failed are journalled again here first.
        """
        self._closing = True
        self._wake.set()
        with anyio.move_on_after(timeout_s):
            if self._running:
                await self._stopped.wait()
            elif self._queue or self._inflight:
                await self._flush()
        if self._run_scope is not None:  # the deadline passed: stop retrying
            self._run_scope.cancel()
            await self._stopped.wait()
        left = len(self._queue) + len(self._inflight)
        if left:
            self._leave_in_journal(left)
        else:
            try:
                await self._store.checkpoint()
            except StoreError as exc:
                metrics.STORE_ERRORS.labels(exc.reason).inc()
                log.warning("meter checkpoint failed: %s", exc)
        self._journal.close()
        return left

    def _leave_in_journal(self, left: int) -> None:
        """At a shutdown that could not commit everything: say what stays in the journal."""
        self._journal_ok, self._next_probe = True, 0.0
        self._check_journal()  # a last try for the records kept only in memory
        lost = len(self._unjournaled)
        log.error("meter: %d record(s) could not be written to the store before the deadline; "
                  "%d left in the journal %s, replayed at the next start",
                  left, left - lost, self._journal.directory)
        if lost:
            metrics.RECORDS_DROPPED.inc(lost)
            log.error("meter: %d record(s) could be written neither to the store nor to the "
                      "journal and are lost", lost)

    async def _flush(self) -> bool:
        """Commit everything queued, in batches; delete its segments once all committed.

        rotate() and taking the queue happen with no await in between, so every record in
        the returned segments is now in ``_inflight`` or already committed.
        """
        if self._queue:
            try:
                self._segments = self._journal.rotate()
            except OSError as exc:
                # Keep appending to the old segment; its records get replayed (harmlessly)
                # at the next start if it is never rotated out.
                metrics.STORE_ERRORS.labels("journal").inc()
                log.error("meter journal rotate failed: %s", exc.strerror or type(exc).__name__)
            self._inflight.extend(self._queue)
            self._queue.clear()
        while self._inflight:
            size = self._batch_size()
            batch = self._inflight[:size]
            if not all(map(storable, batch)):
                batch = self._inflight[:size] = self._drop_unstorable(batch)
                if not batch:
                    continue
            try:
                await self._insert(batch)
            except StoreError as exc:
                self._store_ok = False
                metrics.STORE_ERRORS.labels(exc.reason).inc()
                log.warning("meter batch write failed, will retry: %s", exc)
                return False
            del self._inflight[: len(batch)]
            if self._unjournaled:  # committed: no longer needed in memory
                for rec in batch:
                    self._unjournaled.pop(rec.request_id, None)
        self._store_ok = True
        if self._segments:
            self._journal.remove(self._segments)
            self._segments = []
        return True

    def _batch_size(self) -> int:
        """``batch_max``, or up to ``DEEP_BATCHES`` times it while more records wait.

        SQLite's commit writes every page a batch dirtied, and random request ids dirty a
        page of the id index per row until the batch outgrows the index's leaves: 2,000 rows
        cost ~18 us each, 500 rows ~28 us (bench/writer_bench.py). A writer that falls
        behind thus catches up instead of filling the queue; a light load keeps small,
        prompt batches.
        """
        waiting = len(self._inflight)
        if waiting <= self._batch_max:
            return self._batch_max
        return min(waiting, self._batch_max * DEEP_BATCHES)

    async def _insert(self, batch: list[RequestRecord]) -> int:
        """One transaction per batch; a row the schema refuses is isolated, not retried forever."""
        start = perf_counter()
        try:
            inserted = await self._store_batch(batch)
        except StoreDataError:
            inserted = await self._insert_one_by_one(batch)
        metrics.FLUSH_SECONDS.observe(perf_counter() - start)
        metrics.RECORDS_WRITTEN.inc(inserted)
        return inserted

    @staticmethod
    def _drop_unstorable(records: list[RequestRecord]) -> list[RequestRecord]:
        # A bug upstream (e.g. a NULL request_id): INSERT OR IGNORE would skip it silently,
        # so it is counted here, once (this metric must stay zero), and logged without content.
        kept = [rec for rec in records if storable(rec)]
        metrics.RECORDS_DROPPED.inc(len(records) - len(kept))
        log.error("meter dropped %d record(s) with missing or unbindable fields", len(records) - len(kept))
        return kept

    async def _store_batch(self, batch: list[RequestRecord]) -> int:
        """Insert (and, with billing wired, debit) in one transaction; then update memory."""
        hook = self.billing
        if hook is None:
            return await self._store.insert_records(batch)
        inserted = await self._store.insert_records(batch, hook.in_batch)
        hook.committed()
        return inserted

    async def _insert_one_by_one(self, batch: list[RequestRecord]) -> int:
        inserted = 0
        for rec in batch:
            try:
                inserted += await self._store_batch([rec])
            except StoreDataError as exc:
                # e.g. a value SQLite cannot bind: keeping it would block every later record.
                metrics.RECORDS_DROPPED.inc()
                log.error("meter dropped a record the store refused: %s", exc)
        return inserted
