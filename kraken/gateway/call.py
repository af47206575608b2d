"""Per-request state gathered by the pipeline phases and turned into one record."""
from __future__ import annotations

import os
import time
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

from kraken.errors import KrakenError
from kraken.store.record import RequestRecord
from kraken.providers.usage import Usage

_NO_KEYS: Mapping = MappingProxyType({})
_NO_USAGE = Usage()
_new_tuple = tuple.__new__


_TIME_HEX = 11
"""The id's first 11 hex digits: Unix time in milliseconds (enough until the year 2527)."""
_RANDOM_HEX = 13
"""The rest: 52 bits from the OS's CSPRNG, so an id stays unguessable and unique."""
_IDS_PER_READ = 256


def _ms(ns: int) -> float:
    """Nanoseconds as milliseconds to the microsecond, a tie rounded up: ``round(ns / 1e6, 3)``
    but on exact ties, without its trip through a decimal string (dtoa, snprintf, strtod: ~2,500
    instructions, 0.21 against 0.04 us a call)."""
    return ((ns + 500) // 1000) / 1000


class _RequestIds:
    """``req_`` + 24 hex digits: the time in milliseconds, then 52 random bits.

    Time first, so ids sort roughly in arrival order: the store's ``request_id`` index (and the
    wallet ledger's ``ref``) takes each batch of records in a few adjacent pages instead of one
    random page per row, and the writer's commit writes those few. Random bits are read from the
    OS's CSPRNG for 256 ids at once (one ``getrandom`` syscall per id was ~2% of a request's CPU);
    the block is dropped in a forked child, which would otherwise hand out its parent's ids."""

    __slots__ = ("_block", "_pos", "_ms", "_head")

    def __init__(self) -> None:
        self._block, self._pos = "", 0
        self._ms, self._head = -1, ""

    def next(self) -> str:
        pos = self._pos
        if pos >= len(self._block):
            self._block, pos = os.urandom(_RANDOM_HEX * _IDS_PER_READ // 2).hex(), 0
        self._pos = pos + _RANDOM_HEX
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:  # formatted once per millisecond, not per id
            self._ms, self._head = ms, "req_%0*x" % (_TIME_HEX, ms)
        return self._head + self._block[pos:pos + _RANDOM_HEX]

    def drop(self) -> None:
        self._block, self._pos = "", 0


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.drop)
new_request_id = _ids.next


class Call:
    """What one request did, in timestamps and labels; never its content."""

    __slots__ = (
        "_request_id", "received_ns", "_ts", "route", "customer_id", "model_requested",
        "model_dispatched", "provider", "task_type", "status", "error_type", "fallback_used",
        "usage", "sent_ns", "head_ns", "ttfb_ns", "relay_ns", "end_ns", "reserved", "recorded",
        "stream", "provider_kind", "cost_usd", "fee_usd", "lease", "response_headers", "opted_out", "byok",
        "byok_keys", "key_id", "plan", "trace", "stamped", "late_task",
    )

    def __init__(self, received_ns: int, route: str):
        self.stamped = False  # request_id and ts: made by stamp(), not before the send
        self.received_ns = received_ns
        self.route = route
        self.customer_id: str | None = None
        self.model_requested: str | None = None
        self.model_dispatched: str | None = None
        self.provider = ""
        self.task_type: str | None = None
        self.status = 0
        self.error_type: str | None = None
        self.fallback_used = False
        self.usage: Usage | None = None
        self.sent_ns = 0
        self.head_ns = 0
        self.ttfb_ns = 0
        self.relay_ns = 0
        """Time spent inside the relay's callbacks (gateway work after dispatch)."""
        self.end_ns = 0
        self.reserved = False
        self.recorded = False
        self.stream = False
        self.provider_kind = ""
        self.cost_usd: float | None = None
        self.fee_usd: float | None = None
        self.lease = None
        """The rate limiter's grant, released exactly once when the call ends."""
        self.response_headers: Sequence[tuple[bytes, bytes]] = ()
        """Headers the gateway adds to a successful answer (x-ratelimit-*): replaced, never
        appended to, so a call without any shares the empty tuple (no list per request)."""
        self.opted_out = False
        """The customer objects to non-essential processing: no routing statistics from this call."""
        self.byok = False
        self.key_id: str | None = None
        self.plan: str | None = None
        """The billing plan the call was admitted under (its fee rule)."""
        """The dispatched attempt used the customer's own provider key."""
        self.byok_keys: Mapping = _NO_KEYS
        """The customer's decrypted BYOK keys by provider kind (from the in-memory cache)."""
        self.trace = None
        """Its ``kraken.telemetry.propagation.TraceContext`` when ``[otel]`` is on."""
        self.late_task: Callable[[], None] | None = None
        """A stream's task type still to classify: the record's maker runs it first."""

    # request_id and ts are properties, not a __getattr__ for the reads before ``stamp``: a
    # class with __getattr__ gets no specialised attribute loads (3.11), and a request reads
    # dozens of this object's attributes (~14 ns more each, unspecialised).
    @property
    def request_id(self) -> str:
        """``req_`` + 24 hex digits, made by ``stamp``; read before it (a refusal's
        answer), made now."""
        if not self.stamped:
            self.stamp()
        return self._request_id

    @property
    def ts(self) -> float:
        """Wall-clock time the request's head was complete, made by ``stamp`` (as
        ``request_id``)."""
        if not self.stamped:
            self.stamp()
        return self._ts

    def stamp(self) -> None:
        """Give the call its ``request_id`` and ``ts`` (the wall-clock time its head was
        complete), once. The upstream request carries neither, so a relay calls this once it
        is sent, while the provider works, not before the send."""
        if not self.stamped:
            self.stamped = True
            self._request_id = new_request_id()
            self._ts = time.time() - (time.perf_counter_ns() - self.received_ns) / 1e9

    def classify_late(self) -> None:
        """Run ``late_task`` once, if any: when the record is made."""
        late, self.late_task = self.late_task, None
        if late is not None:
            late()

    def fail(self, exc: KrakenError) -> None:
        if not self.head_ns:  # once the head is out, the status the client saw stands
            self.status = exc.status
        self.error_type = exc.error_type

    def overhead_ns(self) -> int:
        """Gateway time: before dispatch plus inside the relay, without provider waits."""
        before = (self.sent_ns or self.head_ns or time.perf_counter_ns()) - self.received_ns
        return before + self.relay_ns

    def overhead_header(self) -> bytes:
        return b"%.3f" % (self.overhead_ns() / 1e6)

    def to_record(self) -> RequestRecord:
        """The record, built positionally in ``FIELD_NAMES`` order: one per request, and the
        named tuple's keyword ``__new__`` cost ~1.9 us where this costs ~0.9 us."""
        end = self.end_ns or time.perf_counter_ns()
        if not self.stamped:
            self.stamp()
        usage = self.usage or _NO_USAGE
        received, ttfb = self.received_ns, self.ttfb_ns
        return _new_tuple(RequestRecord, (
            self._ts, self._request_id, self.customer_id, self.model_requested,
            self.model_dispatched, self.provider or None,
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
            usage.reasoning_tokens,
            _ms(end - received),  # latency_ms
            _ms(ttfb - received) if ttfb else None,  # ttfb_ms
            self.task_type, self.cost_usd, self.fee_usd, self.fallback_used, self.error_type,
            self.status, self.byok, self.key_id,
        ))
