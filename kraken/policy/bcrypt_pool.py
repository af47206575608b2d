"""bcrypt comparisons off the event loop, bounded so that no one client can take them all.

* Single flight: concurrent checks of one token against one hash share one run.
* At most ``max_pending`` runs queued or running; past that a new run is refused (503).
* Given the request's client address (an ``AttemptGate``): at most ``per_address`` runs in
  flight for that address in this process (429), and every run holds one of the address's
  authentication attempts from the rate limiter (attempts in flight plus recent failures stay
  within ``[limits] ip_auth_failures``, exact across processes with Redis). So a burst of wrong
  keys from one address runs bcrypt a handful of times, and the pool stays open to others.

Refusals for either bound are counted as ``kraken_refused_total{reason="bcrypt_pool"}``. A run
is settled in a done callback, not by the request awaiting it: a client that disconnects
neither gives its address's attempt back early (its bcrypt still runs) nor loses the result
for the requests sharing the run.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable, Protocol

from kraken import errors, shedding
from kraken.policy.ratelimit import RateLimitExceeded
from kraken.metrics import BCRYPT_RUNS

PER_ADDRESS = 4
"""bcrypt runs one client address may have in flight in one process. A few, so a client
starting up with several new keys is not refused, yet 2 threads x 64 queued runs are shared by
at least 32 addresses."""

Settle = Callable[["asyncio.Future[bool]"], None]


class AttemptGate(Protocol):
    """One request's client address as authentication limits it (kraken/policy/authgate.py)."""

    bucket: str
    """The unit the address is counted in (an IPv4 address, an IPv6 /64)."""

    async def attempt(self) -> Any:
        """Hold one authentication attempt for the address, or raise ``RateLimitExceeded``."""

    def done(self, attempt: Any, *, failed: bool) -> None:
        """Give ``attempt`` back, counting a failure if ``failed``; never blocks or raises."""

    async def failed(self) -> None:
        """Count one failed authentication that ran no bcrypt of its own."""


def _overloaded() -> errors.Overloaded:
    shedding.refused("bcrypt_pool")
    return errors.Overloaded("Authentication is overloaded; retry shortly.")


class BcryptPool:
    """A bounded thread pool for ``checker(text, hashed)`` with the bounds above."""

    def __init__(self, checker: Callable[[str, str], bool], threads: int, max_pending: int,
                 per_address: int = PER_ADDRESS) -> None:
        self._checker = checker
        self.max_pending = max_pending
        self._per_address = per_address
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kraken-bcrypt")
        self._inflight: dict[Hashable, asyncio.Future[bool]] = {}
        # flight -> resolved once the request starting it has its address's attempt (or not);
        # until then, requests for the same flight wait instead of starting runs of their own.
        self._starting: dict[Hashable, asyncio.Future[None]] = {}
        # address bucket -> runs in flight (or about to start); an entry lives while one does.
        self._addresses: dict[str, int] = {}
        self.closed = False

    def close(self) -> None:
        """Stop the threads; later runs are refused with 503."""
        self.closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, flight: Hashable, text: str, hashed: str, settle: Settle,
                  gate: AttemptGate | None = None) -> tuple[asyncio.Future[bool], bool]:
        """The one run for ``flight``, and True if this call started it (False: shared).

        ``settle`` is called with the finished run before anyone awaiting it resumes. With
        ``gate``, a run this call starts holds one of the address's attempts, given back as a
        failure if bcrypt said no.
        """
        while (starting := self._starting.get(flight)) is not None:
            await asyncio.shield(starting)  # then share its run, or start one if it gave up
        fut = self._inflight.get(flight)
        if fut is not None:
            return fut, False
        if self.closed or len(self._inflight) + len(self._starting) >= self.max_pending:
            raise _overloaded()
        if gate is None:
            return self._start(flight, text, hashed, settle, None, None), True
        bucket = gate.bucket
        held = self._addresses.get(bucket, 0)
        if held >= self._per_address:
            shedding.refused("bcrypt_pool")
            raise RateLimitExceeded(
                "Too many authentication attempts in progress from this address; retry "
                "shortly", scope="ip_auth", retry_after_s=1, limit=self._per_address)
        self._addresses[bucket] = held + 1  # reserved across the await below
        starting = self._starting[flight] = asyncio.get_running_loop().create_future()
        try:
            attempt = await gate.attempt()
        except BaseException:
            self._unhold(bucket)
            raise
        finally:
            del self._starting[flight]
            starting.set_result(None)
        if self.closed or len(self._inflight) >= self.max_pending:
            self._unhold(bucket)
            gate.done(attempt, failed=False)
            raise _overloaded()
        return self._start(flight, text, hashed, settle, gate, attempt), True

    def _start(self, flight: Hashable, text: str, hashed: str, settle: Settle,
               gate: AttemptGate | None, attempt: Any) -> asyncio.Future[bool]:
        try:
            fut = asyncio.get_running_loop().run_in_executor(self._pool, self._checker, text,
                                                             hashed)
        except RuntimeError:  # pool shut down
            if gate is not None:
                self._unhold(gate.bucket)
                gate.done(attempt, failed=False)
            raise _overloaded() from None
        BCRYPT_RUNS.inc()
        self._inflight[flight] = fut
        fut.add_done_callback(lambda f: self._settled(flight, settle, gate, attempt, f))
        return fut

    def _settled(self, flight: Hashable, settle: Settle, gate: AttemptGate | None,
                 attempt: Any, fut: asyncio.Future[bool]) -> None:
        self._inflight.pop(flight, None)
        if gate is not None:
            self._unhold(gate.bucket)
            said_no = not fut.cancelled() and fut.exception() is None and not fut.result()
            gate.done(attempt, failed=said_no)
        settle(fut)

    def _unhold(self, bucket: str) -> None:
        held = self._addresses.get(bucket, 0) - 1
        if held > 0:
            self._addresses[bucket] = held
        else:
            self._addresses.pop(bucket, None)
