"""The call's cost on a non-streamed answer: ``x-kraken-cost-usd``, and on request
``usage.cost_usd`` in the body.

The cost is known only once the provider's usage (at the end of the body) has been read, so
the head is held: ``CostSink`` wraps the client's sink for one attempt, keeps the head and the
body (at most ``MAX_HELD`` bytes) and writes them in one ``respond`` when the answer ends,
after the record was priced. A larger answer is released as received, without the header (a
client must treat the header as optional). Unknown price: no header, ``"cost_usd": null``.

With ``x-kraken-include-cost: true`` the figure is spliced into the top-level ``usage``
object's bytes (found as the usage tap finds it); every other byte stays as the provider sent
it. Streams have no header: the head leaves before any usage exists, and HTTP trailers
(HTTP/1.1 chunked or HTTP/2) are read by almost no SSE client. An opted-in chat or completions
stream that asked for ``stream_options.include_usage`` gets the figure in its final usage-only
chunk (``choices: []``) instead: only that event is held, from where it starts to the end.
"""
from __future__ import annotations

from kraken.gateway.bodytap import usage_in_tail
from kraken.gateway.call import Call
from kraken.http.exchange import Request, ResponseSink, SinkWrapper

__all__ = ["COST_HEADER", "CostSink", "StreamCostSink", "answer_sink", "format_cost", "opted_in",
           "splice_cost"]

COST_HEADER = b"x-kraken-cost-usd"
OPT_IN_HEADER = b"x-kraken-include-cost"
MAX_HELD = 1024 * 1024
"""Bytes of a non-streamed answer held for the header; chat and completion answers are a few
KiB, a large embeddings batch may pass it and goes out as received."""
_TAIL = 64 * 1024
MAX_EVENT = 64 * 1024
"""Bytes of a stream's usage event held for the figure (a usage chunk is a few hundred)."""
STREAM_ROUTES = frozenset({"chat_completions", "completions"})
"""Streams whose usage comes last, in a chunk of its own (OpenAI's ``choices: []``)."""
_USAGE = b'"usage":{'
_USAGE_ONLY = b'"choices":[]'


def answer_sink(sink: ResponseSink, call: Call, req: Request) -> ResponseSink:
    """The sink one attempt writes to: the client's, wrapped to add the call's cost."""
    if not call.stream:
        return CostSink(sink, call, opted_in(req))
    if call.route in STREAM_ROUTES and opted_in(req):
        return StreamCostSink(sink, call)
    return sink


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


class CostSink(SinkWrapper):
    """The client's sink for one non-streamed attempt, holding the answer to add its cost."""

    __slots__ = ("_call", "_opt_in", "_head", "_body", "_released")

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


class StreamCostSink(SinkWrapper):
    """An opted-in stream: events pass at once, but the usage-only chunk (and what follows it,
    ``[DONE]``) is held until the call is priced, then written with ``"cost_usd"`` in its usage.
    A usage event split across provider reads, or larger than ``MAX_EVENT``, goes out as is."""

    __slots__ = ("_call", "_held", "_done")

    def __init__(self, sink: ResponseSink, call: Call):
        self._sink = sink
        self._call = call
        self._held: bytearray | None = None
        self._done = False

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held += data
            if len(held) > MAX_EVENT:
                self._release(bytes(held))
            return
        at = -1 if self._done else data.find(_USAGE)
        if at < 0:
            self._sink.write(data)
            return
        start = data.rfind(b"\n\n", 0, at)
        start = 0 if start < 0 else start + 2
        if data.find(_USAGE_ONLY, start, at) < 0:
            self._sink.write(data)  # usage beside content (not the final chunk): leave it
            return
        if start:
            self._sink.write(data[:start])
        self._held = bytearray(data[start:])

    def end(self) -> None:
        held = self._held
        if held is not None:
            cost = self._call.cost_usd
            self._release(_with_cost(bytes(held), b"null" if cost is None else format_cost(cost)))
        self._sink.end()

    def _release(self, data: bytes) -> None:
        self._held = None
        self._done = True
        self._sink.write(data)


def _with_cost(held: bytes, cost: bytes) -> bytes:
    """The held bytes (the usage event, then what followed) with the cost in the event's usage."""
    end = held.find(b"\n\n")
    end = len(held) if end < 0 else end
    first, last = held.find(b"{", 0, end), held.rfind(b"}", 0, end)
    if first < 0 or last < 0:
        return held
    spliced = splice_cost(held[first:last + 1], cost)
    return held if spliced is None else held[:first] + spliced + held[last + 1:]
