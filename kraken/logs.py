"""The process's own log: format, level, and the caps that keep libraries from leaking.

The per-request line lives beside the call it describes (kraken/gateway/request_log.py); this
leaf holds what both share: escaping of client text for ``text`` format.

The process log is where libraries write too, and several print secrets below WARNING:
hpack logs every header block it encodes or decodes at DEBUG (clients' Kraken keys, any
client header, provider keys in ``x-api-key``), aiosqlite logs SQL with its parameters,
asyncio in debug mode reprs callbacks with their arguments. ``setup_process_logging`` caps
them in one place. In ``text`` format every client-derived value is escaped, so no value
can end a line or forge a ``key=value`` pair.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import sys
import time
import traceback
from typing import IO, Callable, Protocol

import orjson



class LoggingSettings(Protocol):
    """What logging setup reads of ``[logging]`` (kraken.config.LoggingConfig, a layer above)."""

    level: str
    format: str
    queue_max_kib: int


VALUE_LIMIT = 128
"""Characters of a client-derived string (a model name) a request line keeps."""

THIRD_PARTY_LEVELS = {
    # Header blocks (hpack: every name and value), frames and events at DEBUG.
    "hpack": logging.WARNING, "h2": logging.WARNING, "hyperframe": logging.WARNING,
    "h11": logging.WARNING,
    # Debug mode (PYTHONASYNCIODEBUG) names callbacks with their arguments' repr.
    "asyncio": logging.WARNING,
    # SQL statements with their parameters (key ids, emails, hashes); Redis commands.
    "aiosqlite": logging.WARNING, "redis": logging.WARNING, "asyncpg": logging.WARNING,
    # OpenTelemetry's trace API warns about a client's malformed tracestate quoting it (Kraken
    # drops those first: kraken/telemetry/propagation.py); its other messages are not ours.
    "opentelemetry.trace": logging.ERROR,
    # Everything else Kraken or its tests load (setup.cfg install_requires and extras).
    "anyio": logging.WARNING, "uvloop": logging.WARNING, "orjson": logging.WARNING,
    "cryptography": logging.WARNING, "bcrypt": logging.WARNING,
    "prometheus_client": logging.WARNING, "prometheus_async": logging.WARNING,
    "urllib3": logging.WARNING, "trustme": logging.WARNING,
    "concurrent.futures": logging.WARNING,
}
"""Ceiling levels of library loggers: none of them may speak below WARNING, whatever
``[logging] level`` says (DEBUG is for Kraken's own messages)."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u2069\ufeff]")
"""Characters that end a line or reorder what a terminal shows: escaped in text logs."""
_BARE = re.compile(r"[\w.:/@+-]*", re.ASCII)
"""A text-format value written as is; anything else is quoted."""
_LITERAL = re.compile(r"""(File "[^"\n]*")|(['"])(?:\\.|(?!\2)[^\\\n])*(?:\2|$)""",
                      re.MULTILINE)
"""A quoted literal in a repr (bytes, str), or an unclosed one up to the end of its line;
a traceback's ``File "path"`` (group 1) is kept."""


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match) -> str:
    c = match.group()
    code = ord(c)
    return _ESCAPES.get(c) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """``text`` on one line: control and bidi characters as backslash escapes."""
    return _CONTROL.sub(_escape_char, text)


def text_value(value: object) -> str:
    """A request-line value for the text format: ``-`` for None, bare when it is a plain
    token, else double-quoted with ``"``, ``\\`` and control characters escaped and cut
    at ``VALUE_LIMIT``, so no value can start a line or pass for another ``key=value``."""
    if value is None:
        return "-"
    text = str(value)
    if len(text) <= VALUE_LIMIT and _BARE.fullmatch(text) and text:
        return text
    if len(text) > VALUE_LIMIT:
        text = text[:VALUE_LIMIT] + "..."
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(_escape_char, text) + '"'


def without_literals(text: str) -> str:
    """``text`` with every quoted literal (a repr'd header, body or SQL parameter) blanked:
    library messages and exception texts may name things, never quote values."""
    return _LITERAL.sub(lambda m: m.group(1) or "'***'", text)


def _outline(exc: BaseException | None) -> str:
    """A library's exception as its frames and type names: the message (which may quote a
    header or a body) is withheld, literals in source lines blanked."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    parts = []
    for exc in reversed(chain):
        kind = type(exc)
        parts.append("Traceback (most recent call last):\n"
                     + "".join(traceback.format_tb(exc.__traceback__))
                     + f"{kind.__module__}.{kind.__qualname__} (message withheld)")
    return without_literals("\n\nwhich led to:\n\n".join(parts))


class Throttle:
    """At most one line per ``interval_s`` for a message any client can cause at will (an
    HTTP/2 flood, a reader that stalls): a flood of them must not become a flood of log
    lines. The line that is due names how many were held back since the last one."""

    __slots__ = ("interval_s", "_clock", "_next", "_held")

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._next = -float("inf")
        self._held = 0

    def due(self) -> int | None:
        """The number of lines held back since the last one when a line is due now; None:
        hold this one back too."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return None
        self._next = now + self.interval_s
        held, self._held = self._held, 0
        return held


class ClientPseudonyms:
    """Client addresses as they appear in log lines: a pseudonym that holds for one hour.

    The privacy policy keeps IP addresses for rate limiting only, gone within the hour; a log
    line is kept as long as the journal keeps it. So a line names a client by a keyed digest of
    its address: lines of one hour name one client alike (an operator can follow an abuser),
    and the key, random and in memory only, is replaced every hour, after which no one can
    tell which address any earlier line meant."""

    __slots__ = ("period_s", "_clock", "_key", "_period")

    def __init__(self, period_s: float = 3600.0, clock: Callable[[], float] = time.time):
        self.period_s = period_s
        self._clock = clock
        self._key = b""
        self._period = -1

    def __call__(self, address: str) -> str:
        period = int(self._clock() // self.period_s)
        if period != self._period:
            self._key, self._period = os.urandom(32), period
        digest = hmac.new(self._key, address.encode(errors="replace"), hashlib.sha256)
        return "client-" + digest.hexdigest()[:12]


client_tag = ClientPseudonyms()
"""The process's pseudonym of a client address in its log lines (``ClientPseudonyms``)."""


class ThirdPartyGuard(logging.Filter):
    """Defence in depth behind ``THIRD_PARTY_LEVELS``, on the root handler: a record from
    any logger outside ``kraken`` is dropped below INFO (a library added later, or a level
    lowered at runtime, still cannot log at DEBUG), and what passes has its message and
    traceback rendered now without quoted literals (asyncio's "Executing <Handle cb(b'...')>"
    in debug mode, a header value inside an exception text). Kraken's own records keep their
    exception messages (the operator needs them), with quoted literals blanked too: a bug's
    ``int(value)`` or ``KeyError(key)`` would quote the client text it failed on."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "kraken" or name.startswith("kraken."):
            if record.exc_info and not record.exc_text:  # an exception's text may quote input
                record.exc_text = without_literals(
                    "".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
            return True
        if record.levelno < logging.INFO:
            return False
        try:
            message = record.getMessage()
        except Exception:  # never let logging dump a broken record's arguments
            message = "(unformattable message)"
        record.msg, record.args = without_literals(message), ()
        if record.exc_info:
            record.exc_text = _outline(record.exc_info[1])
        if record.stack_info:
            record.stack_info = without_literals(record.stack_info)
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message``, one physical line per record: control characters in
    the message or a traceback (which may quote client text) are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


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
            line["exc"] = record.exc_text or self.formatException(record.exc_info)
        try:
            return orjson.dumps(line).decode()
        except TypeError:  # a lone surrogate: orjson refuses it, a log line must not
            return orjson.dumps({k: v.encode("utf-8", "backslashreplace").decode()
                                 if isinstance(v, str) else v for k, v in line.items()}).decode()


def cap_libraries() -> None:
    """Library loggers at their ``THIRD_PARTY_LEVELS`` ceiling (also for the CLI tools)."""
    for name, level in THIRD_PARTY_LEVELS.items():
        logging.getLogger(name).setLevel(level)


class QueuedHandler(logging.Handler):
    """Formats a record where it is logged (its arguments and traceback are live only there,
    and ``ThirdPartyGuard`` has just rendered them) and hands the line to the log writer's
    thread (kraken/logwriter.py): no thread, the event loop least of all, waits for stderr."""

    def __init__(self, stream: IO[str], limit: int):
        from kraken import logwriter  # its metric's module is more than the CLI tools need

        super().__init__()
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self._put = logwriter.writer(stream).channel("process", limit, self.dropped_line).put

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # stderr's own errors handler: what StreamHandler's write to it produced
            self._put((self.format(record) + "\n").encode(self.encoding, "backslashreplace"))
        except Exception:  # as StreamHandler: logging never raises into the caller
            self.handleError(record)

    def dropped_line(self, count: int) -> bytes:
        """The line after a gap (made on the writer's thread), in the process log's format."""
        record = logging.LogRecord("kraken.logs", logging.WARNING, __file__, 0,
                                   "%d process log lines dropped: stderr took nothing and "
                                   "their queue was full", (count,), None)
        return (self.format(record) + "\n").encode(self.encoding, "backslashreplace")


def setup_process_logging(cfg: LoggingSettings, worker: int | None = None) -> None:
    """Root logger at ``cfg.level`` on stderr, as JSON lines or the plain text format,
    written by the log writer's thread (``QueuedHandler``).

    ``cfg.level`` is for Kraken's own loggers: libraries are capped (``cap_libraries``) and
    the handler's ``ThirdPartyGuard`` drops what they log below INFO, because at DEBUG they
    print header blocks and SQL parameters (API keys, provider keys, emails)."""
    cap_libraries()
    handler = QueuedHandler(sys.stderr, cfg.queue_max_kib * 1024)
    handler.addFilter(ThirdPartyGuard())
    if cfg.format == "json":
        handler.setFormatter(JsonFormatter(worker))
    else:
        who = "%(name)s" if worker is None else f"%(name)s[worker-{worker}]"
        handler.setFormatter(TextFormatter(f"%(asctime)s %(levelname)s {who} %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.level)
