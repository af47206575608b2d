"""The call's cost on a non-streamed answer: ``x-kraken-cost-usd``, and on request
``usage.cost_usd`` in the body.

The cost is known only once the provider's usage (at the end of the body) has been read, so
the head is held: ``CostSink`` wraps the client's sink for one attempt, keeps the head and the
body (at most ``MAX_HELD`` bytes) and writes them in one ``respond`` when the answer ends,
after the record was priced. A larger answer is released as received, without the header (a
client must treat the header as optional). Unknown price: no header, ``"cost_usd": null``.

With ``x-kraken-include-cost: true`` the figure is spliced into the top-level ``usage``
object's bytes (found as the usage tap finds it); every other byte stays as the provider sent
it. Streams: the head leaves before any usage exists, and HTTP/1.1 chunked trailers reach
almost no client, so a streamed call's cost is in its record (usage API), not in the answer.
"""
from __future__ import annotations

from kraken.gateway.bodytap import usage_in_tail
from kraken.gateway.call import Call
from kraken.http.exchange import Request, ResponseSink

__all__ = ["COST_HEADER", "CostSink", "format_cost", "opted_in", "splice_cost"]

COST_HEADER = b"x-kraken-cost-usd"
OPT_IN_HEADER = b"x-kraken-include-cost"
MAX_HELD = 1024 * 1024
"""Bytes of a non-streamed answer held for the header; chat and completion answers are a few
KiB, a large embeddings batch may pass it and goes out as received."""
_TAIL = 64 * 1024


def opted_in(req: Request) -> bool:
    value = req.header(OPT_IN_HEADER)
    return value is not None and value.strip().lower() in (b"true", b"1")


def format_cost(cost: float) -> bytes:
    """A plain decimal (no exponent), 12 places at most: valid as a header and as JSON."""
    text = b"%.12f" % cost
    return text.rstrip(b"0").rstrip(b".") or b"0"


def splice_cost(body: bytes, cost: bytes, key: bytes = b"usage") -> bytes | None:
    """``body`` with ``"cost_usd":<cost>`` added as the last member of its top-level ``key``
    object, or None when it has none. Only the bytes at the insertion point change."""
    tail_at = max(0, len(body) - _TAIL)
    found = usage_in_tail(body[tail_at:], key)
    if found is None:
        return None
    end = body.rfind(found) + len(found) - 1  # the usage object's closing brace
    empty = not found[1:-1].strip(b" \t\r\n")
    return body[:end] + (b"" if empty else b",") + b'"cost_usd":' + cost + body[end:]


class CostSink:
    """The client's sink for one non-streamed attempt, holding the answer to add its cost."""

    __slots__ = ("_sink", "_call", "_opt_in", "_head", "_body", "_released")

    def __init__(self, sink: ResponseSink, call: Call, opt_in: bool):
        self._sink = sink
        self._call = call
        self._opt_in = opt_in
        self._head: tuple[int, list[tuple[bytes, bytes]], int | None] | None = None
        self._body = bytearray()
        self._released = False

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        if length is not None and length > MAX_HELD:
            self._released = True
            self._sink.start(status, headers, length)
        else:
            self._head = (status, headers, length)

    def write(self, data: bytes) -> None:
        if self._released:
            self._sink.write(data)
            return
        self._body += data
        if len(self._body) > MAX_HELD:
            self._release()

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.start(status, headers, len(body))
        self.write(body)
        self.end()

    def end(self) -> None:
        if self._released or self._head is None:
            self._sink.end()
            return
        status, headers, _ = self._head
        body = bytes(self._body)
        cost = self._call.cost_usd
        figure = None if cost is None else format_cost(cost)
        if figure is not None:
            headers = [*headers, (COST_HEADER, figure)]
        if self._opt_in and 200 <= status < 300:
            body = splice_cost(body, b"null" if figure is None else figure) or body
        self._head = None
        self._sink.respond(status, headers, body)

    def _release(self) -> None:
        """Too large to hold: the head as the provider framed it, then the bytes as received."""
        status, headers, length = self._head
        self._head = None
        self._released = True
        self._sink.start(status, headers, length)
        self._sink.write(bytes(self._body))
        self._body = bytearray()

    def abort(self) -> None:
        self._sink.abort()

    def __getattr__(self, name: str):
        return getattr(self._sink, name)
