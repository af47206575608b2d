"""The request line: one structured line per finished call, written straight to stdout as one
``orjson.dumps`` and one ``write`` (the ``logging`` machinery costs several µs a line). It holds
only metadata the privacy policy names; nothing is logged per chunk. Successful requests log at
INFO and may be sampled; failed ones at WARNING, always kept. Each line is one write under
PIPE_BUF, so workers sharing one stdout never interleave lines. The lines of calls that end in
the same turn of the event loop share that write (up to PIPE_BUF): one syscall per turn, not per
request; a line waits at most until the loop's next turn.
"""
from __future__ import annotations

import asyncio
import logging
import random
import select
import sys
from typing import IO, Callable

import orjson

from kraken.config import LoggingConfig
from kraken.gateway.call import Call
from kraken.logs import VALUE_LIMIT, text_value
from kraken.store.record import RequestRecord

REQUEST_FIELDS = ("ts", "level", "msg", "request_id", "customer_id", "route", "model",
                  "model_dispatched", "provider", "status", "stream", "ttfb_ms", "latency_ms",
                  "fallback", "error_type")
"""Every key a request line may carry, in order: metadata only."""

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE

_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
"""Writes up to this size to a pipe are atomic: workers' lines never interleave."""


def _binary(stream: IO | None) -> IO[bytes]:
    stream = stream if stream is not None else sys.stdout
    return getattr(stream, "buffer", stream)


class RequestLog:
    """Writes the request line for each finished call, honouring level and sampling."""

    __slots__ = ("_write", "_flush", "_info", "_warning", "_sampling", "_every_info", "_json",
                 "_random", "_pending", "_loop")

    def __init__(self, cfg: LoggingConfig, stream: IO | None = None,
                 rand: Callable[[], float] = random.random,
                 loop: asyncio.AbstractEventLoop | None = None):
        out = _binary(stream)
        self._write, self._flush = out.write, out.flush
        level = logging.getLevelName(cfg.level)
        self._info = level <= logging.INFO
        self._warning = level <= logging.WARNING
        self._sampling = cfg.sampling
        self._every_info = self._info and cfg.sampling >= 1.0
        """Every successful request is logged: one check instead of three per request."""
        self._json = cfg.format == "json"
        self._random = rand
        self._pending = bytearray()
        """Lines of this loop turn not yet written (at most PIPE_BUF bytes)."""
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
        if len(pending) + len(data) > _PIPE_BUF:
            self.drain()
        if not pending:
            loop = self._loop
            try:
                (loop or asyncio.get_running_loop()).call_soon(self.drain)
            except RuntimeError:  # no loop (embedded, tests), or it is closed: write it now
                pending += data
                self.drain()
                return
        pending += data

    def drain(self) -> None:
        """Write the pending lines in one write."""
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        try:
            self._write(data)
            self._flush()
        except (OSError, ValueError):  # stdout closed or gone: never fail the request for a log
            pass
