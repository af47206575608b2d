"""Answers the gateway writes itself, and the request id every answer carries.

A metered call's answer carries its call's id (the record's key). Endpoints without a call
(health, readiness, metrics, the model list, webhooks) and the 404/405 answers have no
record, but their answers carry a fresh id too: a client can always quote one. Errors are
written by ``send_error`` alone, in the wire format the endpoint names
(``kraken.providers.error_formats``).
"""
from __future__ import annotations

import logging

from kraken.errors import DatabaseBusy, KrakenError
from kraken.gateway.call import Call, new_request_id
from kraken.http.answers import Answer, Headers
from kraken.http.exchange import ResponseSink, SinkWrapper
from kraken.providers.error_formats import ErrorFormat
from kraken.store.errors import StoreBusy

__all__ = ["PLAIN_REFUSALS", "IdentifiedSink", "refusal", "send_error", "send_json",
           "transport_answer"]

log = logging.getLogger("kraken.gateway")

PLAIN_REFUSALS = (KrakenError, StoreBusy)
"""What a plain endpoint (the account API, the link pages) may raise to be answered as a
refusal (``refusal``); anything else is a fault: a 500 and its traceback."""

_JSON = (b"content-type", b"application/json")


class IdentifiedSink(SinkWrapper):
    """The client's sink, with ``x-request-id`` added to the answer's head (plain endpoints).

    Only the head differs (``start``, ``respond``); everything else is the client's sink."""

    __slots__ = ("request_id",)

    def __init__(self, sink: ResponseSink):
        self._sink = sink
        self.request_id = new_request_id()

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self._sink.start(status, [*headers, (b"x-request-id", self.request_id.encode())], length)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._sink.respond(status, [*headers, (b"x-request-id", self.request_id.encode())], body)


def send_json(sink: ResponseSink, status: int, body: bytes) -> None:
    """A whole JSON answer."""
    sink.respond(status, [_JSON], body)


def send_error(sink: ResponseSink, fmt: ErrorFormat, exc: KrakenError, call: Call) -> None:
    """``exc`` before the first byte, in ``fmt``'s wire format, with the call's request id
    (and, where the format carries them, the call's own headers)."""
    head = fmt.head(exc, call.request_id.encode(), call.response_headers)
    sink.respond(exc.status, head, fmt.body(exc))


def transport_answer(fmt: ErrorFormat, exc: KrakenError, extra: Headers | None = None) -> Answer:
    """``exc`` in ``fmt``'s wire format, as the transport answers it (no call: a fresh
    request id; ``extra`` headers last)."""
    head = fmt.head(exc, new_request_id().encode(), ())
    return exc.status, [*head, *extra] if extra else head, fmt.body(exc)


def refusal(exc: KrakenError | StoreBusy, path: str) -> KrakenError:
    """The answer to a plain endpoint's ``PLAIN_REFUSALS``: a ``KrakenError`` as raised; a busy
    database (another writer held it past ``[store] busy_timeout_ms``: an operator's sqlite3
    shell, a long CLI command) a 503 ``store_busy`` with Retry-After, as the admin API answers
    it, and one warning line naming the route (``path``: Kraken's, not the client's)."""
    if isinstance(exc, KrakenError):
        return exc
    log.warning("%s: request refused, the database is busy (another writer held it past "
                "[store] busy_timeout_ms)", path)
    return DatabaseBusy("The database is busy; retry shortly")
