"""The crash journal: every completed record is appended here before it is queued.

One ``os.write`` per record, no fsync: the bytes are in the kernel's page cache when
``record()`` returns, so a ``kill -9`` of Kraken loses nothing (a power cut may lose the
last moments; that is the price of not syncing per request). Segments are rotated by the
writer and deleted only once every record in them is committed. Each process start opens
a NEW segment, so a torn last line from a crash is never glued to a later record.
"""
from __future__ import annotations

import errno
import math
import os
import time
from pathlib import Path
from typing import Iterable

import orjson

from kraken.speedups import native, pick
from kraken.store.record import FIELD_NAMES as _FIELDS, REQUIRED_FIELDS, RequestRecord

_PREFIX = "seg-"
_SUFFIX = ".jsonl"
PROBE_BYTES = 16384
"""Size of the blank line ``probe()`` writes: room for ~30 records after it succeeds."""


def fields_dict_py(names: tuple[str, ...], values: tuple) -> dict:
    """A record as a dict keyed by field name (``rec._asdict()`` without its call)."""
    return dict(zip(names, values))


fields_dict_c = native("fields_dict")
"""The C version (kraken/csrc/fields.c), or None where it was not built: dict() of a zip
walks each pair as a sequence, ~0.55 us a record."""
fields_dict = pick(fields_dict_c, fields_dict_py)


def only_types_py(values: tuple, types: frozenset) -> bool:
    """Whether every value's type is exactly one of ``types`` (no subclass)."""
    return types.issuperset(map(type, values))


only_types_c = native("only_types")
"""The C version (kraken/csrc/fields.c), or None: the set ``issuperset`` builds from the map
and a ``type()`` call per value cost ~0.4 us of a record's check."""
only_types = pick(only_types_c, only_types_py)

_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


class Journal:
    """Append-only JSON-lines segments in one directory, one line per RequestRecord."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None
        self._current: Path | None = None
        self._written = 0
        self._last_ns = 0
        self._torn = False
        """A failed write may have left a line without its newline: end it before the next."""

    @property
    def current(self) -> Path | None:
        """The segment being appended to (None before open / after close)."""
        return self._current

    def open(self) -> None:
        """Create the directory if needed and start a new segment."""
        if self._fd is not None:
            return
        self._fd, self._current = self._new_segment()
        self._written, self._torn = 0, False

    def _new_segment(self) -> tuple[int, Path]:
        """Open a new segment; the directory is made only when it is missing (the first
        segment, or removed since), not checked at every rotation."""
        while True:
            # Zero-padded nanoseconds sort lexically in creation order; strictly increasing
            # within this process even if the clock stalls. The pid keeps processes apart.
            ns = max(time.time_ns(), self._last_ns + 1)
            self._last_ns = ns
            path = self.directory / f"{_PREFIX}{ns:020d}-{os.getpid()}{_SUFFIX}"
            try:
                return os.open(path, _FLAGS, 0o600), path
            except FileExistsError:
                continue
            except FileNotFoundError:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def append(self, rec: RequestRecord) -> None:
        """Write one line with one ``os.write``. Synchronous, no fsync. Raises OSError.

        The line is the record as a JSON object keyed by field name (``orjson.dumps(
        rec.to_dict()) + b"\\n"``), as every earlier Kraken wrote it: a journal replays whichever
        version wrote it or reads it.
        """
        line = _dumps(fields_dict(_FIELDS, rec), option=_NEWLINE)
        fd = self._fd
        if fd is None or self._torn:
            self._write(line)
            return
        written = _os_write(fd, line)  # once per request: _write's checks inline
        self._written += written
        if written != len(line):
            self._short(fd)

    def probe(self) -> None:
        """Append a blank line of ``PROBE_BYTES`` (readers skip it); OSError if it fails.

        After a failed append the meter refuses requests until this succeeds. A whole
        blank page or more, not one byte: a full disk often still has the tail of a page
        free, and a probe that fits there would let traffic in only to fail again.
        """
        self._write(b" " * (PROBE_BYTES - 1) + b"\n")

    def _write(self, line: bytes) -> None:
        if self._fd is None:
            self.open()
        fd: int = self._fd  # type: ignore[assignment]
        if self._torn:
            self._written += os.write(fd, b"\n")  # a torn line never swallows this one
            self._torn = False
        written = os.write(fd, line)  # raising: nothing of this line was written
        self._written += written
        if written != len(line):
            self._short(fd)

    def _short(self, fd: int) -> None:
        """A line was written only in part: terminate it so the next record stays readable,
        then report it."""
        self._torn = True
        try:
            self._written += os.write(fd, b"\n")
            self._torn = False
        except OSError:
            pass
        raise OSError(errno.ENOSPC, "short write to the meter journal")

    def rotate(self) -> list[Path]:
        """Switch to a new segment; return every older segment on disk (sorted).

        The new segment is opened before the old one is closed, so a failure (OSError)
        leaves the journal appending where it was.
        """
        fd, path = self._new_segment()
        old_fd, self._fd, self._current, self._written = self._fd, fd, path, 0
        self._torn = False
        if old_fd is not None:
            os.close(old_fd)
        return [p for p in self.segments() if p != path]

    def segments(self) -> list[Path]:
        """All segment files in the directory, oldest first (including the current one).

        Names are matched as strings from one ``os.listdir``: the writer asks at every flush,
        and ``Path.glob`` took ~10x longer (a Python selector, a pattern and a Path per entry)."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        directory = self.directory
        return [directory / name for name in sorted(names)
                if name.startswith(_PREFIX) and name.endswith(_SUFFIX)]

    @staticmethod
    def read(path: Path) -> list[RequestRecord]:
        """Every well-formed record in a segment; torn or garbage lines are skipped."""
        out = []
        for line in Path(path).read_bytes().split(b"\n"):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            rec = _from_line(data)
            if rec is not None:
                out.append(rec)
        return out

    def remove(self, paths: Iterable[Path]) -> None:
        """Delete segments whose records are all committed (missing files are fine)."""
        for path in paths:
            if path == self._current:
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Close the current segment, deleting it if nothing was written to it.

        A later ``append`` reopens a fresh segment, so records pushed after shutdown began
        are still journaled.
        """
        fd, path, written = self._fd, self._current, self._written
        self._fd, self._current, self._written, self._torn = None, None, 0, False
        if fd is None:
            return
        os.close(fd)
        if written == 0 and path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


_SCALARS = frozenset((str, int, float, bool, type(None)))
_isfinite = math.isfinite
_dumps = orjson.dumps
_os_write = os.write
_NEWLINE = orjson.OPT_APPEND_NEWLINE


_NUMBERS = frozenset((int, float))


def storable(rec: RequestRecord) -> bool:
    """Every value is a scalar SQLite can bind and the NOT NULL fields are typed.

    The store's ``INSERT OR IGNORE`` would silently skip a row violating NOT NULL or
    CHECK, so the writer checks this first and counts such a record as dropped.

    Once every value's type is exactly one of ``_SCALARS`` (no subclass), ``type(x) is str``
    is ``isinstance(x, str)``, and an int that is no bool is ``type(x) is int``: checked
    that way, on the event loop once per record before each batch. NaN and infinities bind
    as NULL in SQLite (orjson writes them as null): not a usable number.
    """
    ts, latency = rec.ts, rec.latency_ms
    return (
        only_types(rec, _SCALARS)
        and type(rec.request_id) is str
        and type(ts) in _NUMBERS and _isfinite(ts)
        and type(latency) in _NUMBERS and _isfinite(latency)
        and type(rec.fallback_used) is bool
        and type(rec.status) is int
    )


def _from_line(data: object) -> RequestRecord | None:
    if not isinstance(data, dict) or not all(name in data for name in REQUIRED_FIELDS):
        return None
    rec = RequestRecord.from_dict(data)
    return rec if storable(rec) else None
