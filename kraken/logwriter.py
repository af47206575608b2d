"""Log output off the event loop: a bounded queue per stream, drained by a writer thread.

Under systemd stdout and stderr are pipes to journald. When journald stalls (I/O pressure,
rate limiting) a pipe fills and a write to it blocks: written from the event loop, one such
write stalled every request on the host. Here the loop only hands a line's bytes to a queue
(``SimpleQueue.put``, C: no lock of ours, no syscall unless the writer sleeps) and the
output's one writer thread writes them, joining the lines it finds queued into writes of at
most ``PIPE_BUF`` bytes: atomic on a pipe, so workers sharing one never interleave lines.
Each output has its own thread, so a stdout that takes nothing never holds stderr's lines.

Each stream (``request``: the request lines; ``process``: the process log) has a budget of
queued bytes. While its output takes nothing the budget fills, and then a line is dropped,
counted in ``kraken_log_lines_dropped_total{stream}``; the first line queued after a gap is
preceded by one line saying how many were dropped, in that stream's own format. Order is
kept: one FIFO and one thread per output. At exit the queues get ``EXIT_FLUSH_S`` in all.

Not ``logging.handlers.QueueHandler``: for a request line it would make a ``LogRecord`` and
copy it (several µs a line, see kraken/gateway/request_log.py), and its queue has no bound.

The queue is the way round a stalled output, not the way of every line: handing each line to
the thread cost ~30 µs of CPU a request (a wake-up, a context switch and the GIL passed back
and forth: `bench/ab.py --scenario nonstream`, 0.098 -> 0.128 ms a request). So a line is
written where it is made when its channel has nothing queued and the output takes it at once:
a pipe with room for ``PIPE_BUF`` bytes (``poll``, no wait) takes a line that long whole. Only
while the output is full, or lines wait ahead of it, does a line go through the queue.
"""
from __future__ import annotations

import atexit
import os
import select
import sys
import threading
import time
import weakref
from queue import Empty, SimpleQueue
from typing import IO, Callable

from kraken import metrics

PIPE_BUF = getattr(select, "PIPE_BUF", 512)
"""Writes up to this size to a pipe are atomic: workers' lines never interleave."""
EXIT_FLUSH_S = 1.0
"""At exit, what is queued gets this long to be written: an output that takes nothing (a
stalled journald) must not hold a stop past systemd's TimeoutStopSec (see
systemd/kraken.service: the drain, the abort and the meter's flush come first)."""


class Channel:
    """One stream's way to its output: the stream's budget, its drops and its gap notice.

    ``put`` is called by one thread at a time (the request lines: the event loop; the
    process log: under its handler's lock), so the counters need no lock: ``queued`` is the
    producer's, ``written`` the writer thread's."""

    __slots__ = ("limit", "notice", "queued", "written", "_put", "_unreported", "_dropped",
                 "_fd", "_room", "__weakref__")

    def __init__(self, name: str, limit: int, notice: Callable[[int], bytes],
                 put: Callable[[tuple], None], fd: int | None = None):
        self.limit = limit
        """Bytes queued and not yet written, at most; a line that would pass it is dropped."""
        self.notice = notice
        """The line, in the stream's format, saying how many lines a gap lost (writer thread)."""
        self.queued = 0
        self.written = 0
        self._put = put
        self._unreported = 0
        """Lines dropped since the last one queued: the next notice's number."""
        self._dropped = metrics.LOG_LINES_DROPPED.labels(name)
        self._fd = fd
        """The output's descriptor, written here while it has room (module doc), or None."""
        self._room: Callable[[int], list] | None = None
        if fd is not None:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            self._room = poller.poll

    def put(self, data: bytes) -> None:
        """Write ``data`` (whole lines, each ending in ``\\n``) now if the output takes it at
        once and nothing waits ahead of it, else queue it; never waits. Over the budget the
        lines are dropped and counted."""
        if (self._room is not None and self.queued == self.written and not self._unreported
                and len(data) <= PIPE_BUF and self._room(0)):
            try:
                done = os.write(self._fd, data)  # type: ignore[arg-type]
            except BlockingIOError:
                done = 0
            except OSError:  # the output is gone: lost quietly, as the writer thread does
                return
            if done == len(data):
                return
            data = data[done:]  # (a file or a terminal may take part of it)
        queued = self.queued + len(data)
        if queued - self.written > self.limit:
            lines = data.count(b"\n") or 1
            self._unreported += lines
            self._dropped.inc(lines)
            return
        if self._unreported:
            self.announce()  # the notice goes where the gap is
        self.queued = queued
        self._put((self, data))

    def announce(self) -> None:
        """Queue the notice of the lines dropped since the last line queued, if any."""
        if self._unreported:
            self._put((self, self._unreported))
            self._unreported = 0


class LogWriter:
    """One output's FIFO and the thread that writes it."""

    def __init__(self, target: IO):
        self._fd, self._stream = _output(target)
        self._queue: SimpleQueue = SimpleQueue()
        self._channels: weakref.WeakSet[Channel] = weakref.WeakSet()
        self._thread = threading.Thread(target=self._run, name="kraken-log-writer", daemon=True)
        self._thread.start()

    def channel(self, name: str, limit: int, notice: Callable[[int], bytes]) -> Channel:
        """A stream's way in: ``name`` is the metric's label (``request``, ``process``)."""
        channel = Channel(name, limit, notice, self._queue.put, self._fd)
        self._channels.add(channel)
        return channel

    def flush(self, timeout: float) -> bool:
        """Wait until every line queued before this call is written, at most ``timeout``
        seconds; False when the output took too long."""
        return self.mark().wait(timeout)

    def mark(self) -> threading.Event:
        """An event set once every line queued before this call is written, a gap that no
        line has followed yet announced first (at exit none will)."""
        for channel in list(self._channels):
            channel.announce()
        done = threading.Event()
        self._queue.put((None, done))
        return done

    def _run(self) -> None:
        get, get_now = self._queue.get, self._queue.get_nowait
        held = None
        while True:
            channel, data = held or get()
            held = None
            if channel is None:  # a flush's mark: everything before it is written
                data.set()
                continue
            counted = 0
            if data.__class__ is int:
                data = self._notice(channel, data)
            else:
                counted = len(data)
            parts, size = [data], len(data)
            while size < PIPE_BUF:  # what else is queued for this stream, up to one atomic write
                try:
                    item = get_now()
                except Empty:
                    break
                more = item[1]
                if item[0] is not channel or more.__class__ is not bytes or \
                        size + len(more) > PIPE_BUF:
                    held = item
                    break
                parts.append(more)
                size += len(more)
                counted += len(more)
            self._write(data if len(parts) == 1 else b"".join(parts))
            channel.written += counted

    @staticmethod
    def _notice(channel: Channel, count: int) -> bytes:
        try:
            return channel.notice(count)
        except Exception:  # the thread must outlive a formatter's bug: the count is in metrics
            return b""

    def _write(self, data: bytes) -> None:
        """Write ``data`` whole: an output that is gone loses it quietly (a log never fails
        the process, and this thread must live on for the next line)."""
        try:
            if self._fd is None:
                self._stream.write(data)
                self._stream.flush()
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:  # an O_NONBLOCK descriptor: wait here, not on the loop
                    select.select([], [self._fd], [])
        except Exception:  # closed, EPIPE, EBADF; a test's stream raising anything
            pass


def _output(target: IO) -> tuple[int | None, IO]:
    """The process's own stdout or stderr is written with ``os.write`` on its descriptor (its
    buffer and that buffer's lock are never held by the thread, so an exit never waits on a
    blocked write); any other stream (a test's) through its binary ``write``."""
    binary = getattr(target, "buffer", target)
    if target in (sys.__stdout__, sys.__stderr__):
        try:
            target.flush()  # what was printed before comes first
            return target.fileno(), binary
        except (OSError, ValueError):
            pass
    return None, binary


_writers: dict[int, tuple[IO, LogWriter]] = {}
_lock = threading.Lock()


def writer(target: IO) -> LogWriter:
    """The writer of ``target`` (stdout, stderr), its thread started on first use. At exit
    what is queued is written for at most ``EXIT_FLUSH_S`` in all.

    Threads must start after ``kraken.fdtable.reserve_descriptors`` (kraken/cli.py calls it
    first): growing the descriptor table with a second thread alive waits for RCU."""
    with _lock:
        if not _writers:
            atexit.register(flush, EXIT_FLUSH_S)
        if id(target) not in _writers:  # the target is kept: its id is never reused
            _writers[id(target)] = (target, LogWriter(target))
        return _writers[id(target)][1]


def flush(timeout: float) -> bool:
    """Wait until every writer has written what was queued before, ``timeout`` seconds in all;
    False when an output took too long."""
    deadline = time.monotonic() + timeout
    with _lock:
        marks = [w.mark() for _, w in _writers.values()]  # all at once: each output at its pace
    return all([mark.wait(max(deadline - time.monotonic(), 0.0)) for mark in marks])
