"""Errors as responses, for any ``ResponseSink``: the transports' own refusals and whatever
a handler lets escape. Protocol-neutral, so nothing above the transport imports h1 or h2."""
from __future__ import annotations

import os

from kraken import metrics
from kraken.errors import KrakenError, RequestRejected, error_body
from kraken.http.exchange import ResponseSink

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""(status, headers, body): what ``ResponseSink.respond`` takes."""

REJECT_CODES = {400: "invalid_request", 405: "method_not_allowed", 408: "request_timeout",
                413: "request_too_large", 414: "uri_too_long",
                431: "request_header_fields_too_large", 505: "http_version_not_supported"}
"""Error codes of the requests a transport refuses before any handler sees them (HTTP/1.1
and HTTP/2 share it; each refuses only some of these statuses)."""


def rejection(status: int, reason: str) -> KrakenError:
    """A transport's refusal of a malformed or over-limit request, counted as such."""
    metrics.PROTOCOL_ERRORS.labels(str(status)).inc()
    return RequestRejected(reason, status, REJECT_CODES.get(status))


def error_answer(exc: KrakenError, extra: list[tuple[bytes, bytes]] | None = None) -> Answer:
    """``exc`` as an OpenAI-style JSON error (the one place errors are rendered).

    Every answer carries ``x-request-id``: ``extra`` has the call's; an answer the transport
    gives on its own (a malformed request, an error no handler caught) gets a fresh one,
    shaped like the gateway's (``req_`` + 24 hex digits)."""
    body = error_body(exc)
    extra = extra or []
    if not any(name == b"x-request-id" for name, _ in extra):
        extra = [*extra, (b"x-request-id", b"req_" + os.urandom(12).hex().encode())]
    return exc.status, [(b"content-type", b"application/json")] + exc.headers + extra, body


def send_error(sink: ResponseSink, exc: KrakenError,
               extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer ``exc`` on ``sink`` (see ``error_answer``)."""
    status, headers, body = error_answer(exc, extra)
    sink.start(status, headers, len(body))
    sink.write(body)
    sink.end()
