"""Answers the gateway writes itself, and the request id every answer carries.

A metered call's answer carries its call's id (the record's key). Endpoints without a call
(health, readiness, metrics, the model list, webhooks) and the 404/405 answers have no
record, but their answers carry a fresh id too: a client can always quote one.
"""
from __future__ import annotations

from kraken.gateway.call import new_request_id
from kraken.http.exchange import ResponseSink

__all__ = ["IdentifiedSink", "send_json"]

_JSON = (b"content-type", b"application/json")


class IdentifiedSink:
    """The client's sink, with ``x-request-id`` added to the answer's head (plain endpoints).

    Only ``start`` differs; everything else is the client's sink itself."""

    __slots__ = ("_sink", "request_id")

    def __init__(self, sink: ResponseSink):
        self._sink = sink
        self.request_id = new_request_id()

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self._sink.start(status, [*headers, (b"x-request-id", self.request_id.encode())], length)

    def __getattr__(self, name: str):
        return getattr(self._sink, name)


def send_json(sink: ResponseSink, status: int, body: bytes) -> None:
    """A whole JSON answer."""
    sink.start(status, [_JSON], len(body))
    sink.write(body)
    sink.end()
