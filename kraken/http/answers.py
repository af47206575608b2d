"""Errors as responses, for any ``ResponseSink``: the transports' own refusals and whatever
a handler lets escape. Protocol-neutral, so nothing above the transport imports h1 or h2.

The transport knows no API, so the wire format of its refusals is the service's to say: a
listener is given ``ErrorAnswers`` (the gateway's says an error under ``/v1/messages`` as
Anthropic's SDK reads it), called with the request's path wherever the head showed it.
Without one, or without a path, the answer is OpenAI-style (``error_answer``).
"""
from __future__ import annotations

import os
from typing import Protocol

from kraken import metrics
from kraken.errors import KrakenError, RequestRejected, error_body
from kraken.http.exchange import ResponseSink

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]
"""(status, headers, body): what ``ResponseSink.respond`` takes."""


class ErrorAnswers(Protocol):
    """Renders ``exc`` for a request to ``path`` (None: not known), with ``extra`` headers;
    the answer carries an ``x-request-id``."""

    def __call__(self, exc: KrakenError, path: str | None,
                 extra: Headers | None = None) -> Answer: ...


REJECT_CODES = {400: "invalid_request", 405: "method_not_allowed", 408: "request_timeout",
                413: "request_too_large", 414: "uri_too_long",
                431: "request_header_fields_too_large", 505: "http_version_not_supported"}
"""Error codes of the requests a transport refuses before any handler sees them (HTTP/1.1
and HTTP/2 share it; each refuses only some of these statuses)."""


def rejection(status: int, reason: str) -> KrakenError:
    """A transport's refusal of a malformed or over-limit request, counted as such."""
    metrics.PROTOCOL_ERRORS.labels(str(status)).inc()
    return RequestRejected(reason, status, REJECT_CODES.get(status))


def error_answer(exc: KrakenError, extra: Headers | None = None) -> Answer:
    """``exc`` as an OpenAI-style JSON error: the transport's own rendering (``plain_answers``).

    Every answer carries ``x-request-id``: ``extra`` has the call's; an answer the transport
    gives on its own (a malformed request, an error no handler caught) gets a fresh one,
    shaped like the gateway's (``req_`` + 24 hex digits)."""
    body = error_body(exc)
    extra = extra or []
    if not any(name == b"x-request-id" for name, _ in extra):
        extra = [*extra, (b"x-request-id", b"req_" + os.urandom(12).hex().encode())]
    return exc.status, [(b"content-type", b"application/json")] + exc.headers + extra, body


def plain_answers(exc: KrakenError, path: str | None, extra: Headers | None = None) -> Answer:
    """``ErrorAnswers`` that ignore the path: OpenAI-style, the transport's own (the admin
    listener's, a bare ``H1Connection``'s)."""
    return error_answer(exc, extra)


def send_error(sink: ResponseSink, exc: KrakenError,
               extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer ``exc`` on ``sink`` (see ``error_answer``)."""
    status, headers, body = error_answer(exc, extra)
    sink.start(status, headers, len(body))
    sink.write(body)
    sink.end()
