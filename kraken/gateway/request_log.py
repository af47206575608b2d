"""The request line: one structured line per finished call, made as one ``orjson.dumps`` and
handed to the log writer's thread (kraken/logwriter.py), which writes it to stdout; the event
loop never waits for the write (the ``logging`` machinery costs several µs a line). It holds
only metadata the privacy policy names; nothing is logged per chunk. Successful requests log at
INFO and may be sampled; failed ones at WARNING, always kept. The lines of calls that end in the
same turn of the event loop are handed over together, up to PIPE_BUF bytes (one write per turn,
not per request; a line waits at most until the loop's next turn), and no write is longer, so
workers sharing one stdout never interleave lines.
"""
from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from typing import IO, Callable

import orjson

from kraken import logwriter
from kraken.config import LoggingConfig
from kraken.gateway.call import Call
from kraken.logs import VALUE_LIMIT, text_value
from kraken.store.record import RequestRecord

REQUEST_FIELDS = ("ts", "level", "msg", "request_id", "customer_id", "route", "model",
                  "model_dispatched", "provider", "status", "stream", "ttfb_ms", "latency_ms",
                  "fallback", "error_type")
"""Every key a request line may carry, in order: metadata only."""

DROPPED_MSG = "request lines dropped"
"""The ``msg`` of the line that follows a gap: stdout took nothing and the queue was full."""

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE


class RequestLog:
    """Writes the request line for each finished call, honouring level and sampling."""

    __slots__ = ("_put", "_info", "_warning", "_sampling", "_every_info", "_json", "_random",
                 "_pending", "_loop")

    def __init__(self, cfg: LoggingConfig, stream: IO | None = None,
                 rand: Callable[[], float] = random.random,
                 loop: asyncio.AbstractEventLoop | None = None):
        level = logging.getLevelName(cfg.level)
        self._info = level <= logging.INFO
        self._warning = level <= logging.WARNING
        self._sampling = cfg.sampling
        self._every_info = self._info and cfg.sampling >= 1.0
        """Every successful request is logged: one check instead of three per request."""
        self._json = cfg.format == "json"
        self._random = rand
        self._put = logwriter.writer(stream if stream is not None else sys.stdout).channel(
            "request", cfg.queue_max_kib * 1024, self._dropped_line).put
        self._pending = bytearray()
        """Lines of this loop turn not yet handed over (at most PIPE_BUF bytes)."""
        self._loop = loop
        """The serving loop, handed down by the app: ``asyncio.get_running_loop()`` makes a
        getpid syscall per call on 3.11. None: looked up per turn (embedded use, tests)."""

    def emit(self, call: Call, rec: RequestRecord) -> None:
        failed = rec.status >= 400 or rec.error_type is not None
        if failed:
            if not self._warning:
                return
        elif not self._every_info and (
                not self._info or (self._sampling < 1.0 and self._random() >= self._sampling)):
            return
        # The two model names bounded inline (once per request: a call each cost more).
        model, dispatched = rec.model_requested, rec.model_dispatched
        if model is not None and len(model) > VALUE_LIMIT:  # client text (provider/model)
            model = model[:VALUE_LIMIT]
        if dispatched is not None and len(dispatched) > VALUE_LIMIT:
            dispatched = dispatched[:VALUE_LIMIT]
        line = {
            "ts": int(rec.ts * 1000 + 0.5) / 1000,  # to the ms; round(ts, 3) took 3x as long
            "level": "WARNING" if failed else "INFO",
            "msg": "request",
            "request_id": rec.request_id,
            "customer_id": rec.customer_id,
            "route": call.route,
            "model": model,
            "model_dispatched": dispatched,
            "provider": rec.provider,
            "status": rec.status,
            "stream": call.stream,
            "ttfb_ms": rec.ttfb_ms,
            "latency_ms": rec.latency_ms,
            "fallback": rec.fallback_used,
            "error_type": rec.error_type,
        }
        if self._json:
            data = _dumps(line, option=_NEWLINE)
        else:
            data = (" ".join(f"{k}={text_value(v)}" for k, v in line.items()
                             if k not in ("ts", "msg")) + "\n").encode()
        pending = self._pending
        if len(pending) + len(data) > logwriter.PIPE_BUF:
            self.drain()
        if not pending:
            try:
                (self._loop or asyncio.get_running_loop()).call_soon(self.drain)
            except RuntimeError:  # no loop (embedded, tests), or it is closed: hand it over now
                self._put(data)
                return
        pending += data

    def drain(self) -> None:
        """Hand this turn's lines to the log writer (written at once while stdout has room)."""
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            self._put(data)

    def _dropped_line(self, count: int) -> bytes:
        """The line after a gap (made on the writer's thread), in the request lines' format."""
        if self._json:
            return _dumps({"ts": round(time.time(), 3), "level": "WARNING", "msg": DROPPED_MSG,
                           "dropped": count}, option=_NEWLINE)
        return f"level=WARNING msg={text_value(DROPPED_MSG)} dropped={count}\n".encode()
