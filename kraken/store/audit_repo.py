"""What the audit chain (kraken/audit) needs from a store: its SQL, one implementation per backend.

kraken/audit keeps the chain's rules (hashing, verification, what may be purged); a repository
only reads and writes rows, in the backend's dialect. Each store exposes its repository as
``store.audit`` (and each transaction as ``tx.audit``, for appends inside an action's own
transaction): ``kraken/store/audit_sqlite.py`` and ``kraken/store/postgres/audit.py``.

A row is the tuple ``COLUMNS`` names, in that order.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

COLUMNS = ("seq", "ts", "actor", "action", "target", "subject", "salt", "target_digest",
           "subject_digest", "detail", "prev_hash", "hash", "actor_digest")
"""An audit_log row, in the order every repository reads and writes it."""

ENTRY_COLUMNS = ("seq", "ts", "actor", "action", "target", "subject", "detail")
"""What ``entries`` returns per row (a listing, without the chain's digests)."""

BIGGEST_SEQ = 2**63 - 1


class Reader(Protocol):
    """A store or an open transaction: anything that runs a read query."""

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]: ...


class AuditRepo(Protocol):
    """The audit_log and audit_anchor tables of one backend."""

    async def head(self, tx: Any) -> tuple[int, str] | None:
        """Seq and hash of the newest entry (else the purge anchor's), or None for an empty chain.

        Called right before ``insert`` in the same transaction; until that transaction ends,
        no other writer (process or host) can append, so the head read is the true one.
        """
        ...

    async def insert(self, tx: Any, row: Sequence[Any]) -> None:
        """Append ``row`` (after ``head``), its target/subject blanked if they name a customer
        erased by now, as ``redact`` blanks them."""
        ...

    async def redact(self, tx: Any, customer_id: str, actors: Sequence[str] = ()) -> int:
        """Blank target/subject wherever they name ``customer_id``, and the actor where it is
        one of ``actors`` and its entry holds the actor's digest; rows changed."""
        ...

    async def key_targets(self, tx: Any, customer_id: str) -> list[str]:
        """Targets of ``key.*`` entries about ``customer_id``: its key ids, deleted ones too."""
        ...

    async def anchor(self, q: Reader) -> tuple[int, str] | None:
        """Seq and hash of the last purged entry, if anything was ever purged."""
        ...

    async def rows(self, q: Reader, first_seq: int, last_seq: int, limit: int) -> list[tuple]:
        """Up to ``limit`` full rows with first_seq <= seq <= last_seq, by seq."""
        ...

    async def lowest_seq_below(self, q: Reader, seq: int) -> int | None: ...

    async def purge_point(self, q: Reader, cutoff_ts: float) -> tuple[int, str] | None:
        """Seq and hash of the newest entry of the oldest run of entries written before cutoff."""
        ...

    async def purge(self, tx: Any, last_seq: int, last_hash: str, now: float) -> int:
        """Move the anchor to (last_seq, last_hash), delete entries up to it; rows deleted."""
        ...

    async def entries(self, q: Reader, after_seq: int, limit: int,
                      subject: str | None) -> list[tuple]:
        """``ENTRY_COLUMNS`` of entries after ``after_seq``, oldest first, optionally one subject's."""
        ...


__all__ = ["AuditRepo", "BIGGEST_SEQ", "COLUMNS", "ENTRY_COLUMNS", "Reader"]
