"""Logs for journald: one structured line per request, and the process's own log format.

The request line holds only metadata the privacy policy names (ids, model, provider,
status, timings, error type): never content, keys or key hashes. It is written straight to
stdout as one ``orjson.dumps`` and one ``write`` per request, skipping the ``logging``
machinery (a LogRecord, a formatter and a handler lock cost several µs each); nothing is
logged per chunk. Successful requests log at INFO and may be sampled; failed requests
log at WARNING and are always kept. Each line is a single write well under PIPE_BUF, so
worker processes sharing one stdout never interleave lines.
"""
from __future__ import annotations

import logging
import random
import sys
from typing import IO, TYPE_CHECKING, Callable

import orjson

if TYPE_CHECKING:
    from kraken.config import LoggingConfig
    from kraken.gateway.call import Call
    from kraken.meter.record import RequestRecord

REQUEST_FIELDS = ("ts", "level", "msg", "request_id", "customer_id", "route", "model",
                  "model_dispatched", "provider", "status", "stream", "ttfb_ms", "latency_ms",
                  "fallback", "error_type")
"""Every key a request line may carry, in order: metadata only."""


def _binary(stream: IO | None) -> IO[bytes]:
    stream = stream if stream is not None else sys.stdout
    return getattr(stream, "buffer", stream)


class RequestLog:
    """Writes the request line for each finished call, honouring level and sampling."""

    __slots__ = ("_write", "_flush", "_info", "_warning", "_sampling", "_json", "_random")

    def __init__(self, cfg: LoggingConfig, stream: IO | None = None,
                 rand: Callable[[], float] = random.random):
        out = _binary(stream)
        self._write, self._flush = out.write, out.flush
        level = logging.getLevelName(cfg.level)
        self._info = level <= logging.INFO
        self._warning = level <= logging.WARNING
        self._sampling = cfg.sampling
        self._json = cfg.format == "json"
        self._random = rand

    def emit(self, call: Call, rec: RequestRecord) -> None:
        failed = rec.status >= 400 or rec.error_type is not None
        if failed:
            if not self._warning:
                return
        elif not self._info or (self._sampling < 1.0 and self._random() >= self._sampling):
            return
        line = {
            "ts": round(rec.ts, 3),
            "level": "WARNING" if failed else "INFO",
            "msg": "request",
            "request_id": rec.request_id,
            "customer_id": rec.customer_id,
            "route": call.route,
            "model": rec.model_requested,
            "model_dispatched": rec.model_dispatched,
            "provider": rec.provider,
            "status": rec.status,
            "stream": call.stream,
            "ttfb_ms": rec.ttfb_ms,
            "latency_ms": rec.latency_ms,
            "fallback": rec.fallback_used,
            "error_type": rec.error_type,
        }
        if self._json:
            data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        else:
            data = (" ".join(f"{k}={'-' if v is None else v}" for k, v in line.items()
                             if k not in ("ts", "msg")) + "\n").encode()
        try:
            self._write(data)
            self._flush()
        except (OSError, ValueError):  # stdout closed or gone: never fail the request for a log
            pass


class JsonFormatter(logging.Formatter):
    """Process messages (startup, shutdown, warnings) as JSON lines, like the request lines."""

    def __init__(self, worker: int | None = None):
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname,
                "logger": record.name, "msg": record.getMessage()}
        if self.worker is not None:
            line["worker"] = self.worker
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def setup_process_logging(cfg: LoggingConfig, worker: int | None = None) -> None:
    """Root logger at ``cfg.level`` on stderr, as JSON lines or the plain text format."""
    handler = logging.StreamHandler(sys.stderr)
    if cfg.format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        who = "%(name)s" if worker is None else f"%(name)s[worker-{worker}]"
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {who} %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.level)
