"""The relay: one upstream response written to one client, bytes unchanged.

Runs inside the upstream connection's ``data_received`` callbacks, so a provider chunk
reaches the client socket in the same loop iteration, with no task switch. States:

    WAITING ──2xx head──▶ STREAMING ──end──▶ DONE
    WAITING ──error / non-2xx──▶ REFUSED   (nothing sent: the pipeline may fall back)
    STREAMING ──provider error──▶ FAILED   (SSE ``error`` event, then the response ends)
    STREAMING ──provider error, the answer still held whole──▶ REFUSED   (nothing sent)
    STREAMING ──end, the tap read a failure in the stream──▶ FAILED   (recorded as one)
    any ──client gone──▶ CANCELLED

When the endpoint declares a response filter (the client's wire format is not the provider's),
the provider's bytes are still tapped for usage as received, then fed to the filter, and what
it yields is written; otherwise they are written as they are.

A long stream's usual read (one whole chunk of whole SSE events, no usage object or error mark
in it: ``plainchunk``) goes from the provider's socket callback straight to the client's socket
(``UpstreamConnection.pipe``), once a read has gone the full way and left the parser and the
tap at a boundary: one C test and one write per read, same bytes out (``on_chunk``).
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from kraken import metrics
from kraken.errors import KrakenError, UpstreamError
from kraken.gateway.bodytap import BodyTap
from kraken.gateway.call import Call
from kraken.gateway.sse import SseTap
from kraken.http.exchange import ResponseSink, header_value
from kraken.providers.family import Headers, ResponseFilter, StreamTap, WireFamily

WAITING, STREAMING, DONE, REFUSED, FAILED, CANCELLED = (
    "waiting", "streaming", "done", "refused", "failed", "cancelled")

MAX_ERROR_BODY = 64 * 1024
MAX_RETRY_AFTER_S = 86_400
"""The longest provider ``Retry-After`` passed on (seconds); a longer or non-numeric one
(an HTTP date) is not."""
_SAMPLE = 8
"""``call.relay_ns`` times one in this many one-chunk reads (two clock reads cost ~7% of such a
read's relay work) and counts it for itself and the untimed reads after it; ``_settle`` takes
back those that never came, so each read is counted once, at its sample's time."""
_SAMPLE_MASK = _SAMPLE - 1


def _seconds(retry_after: bytes) -> int | None:
    """A provider's ``Retry-After`` as whole seconds, if it is a plausible number of them."""
    value = retry_after.strip()
    if not value.isdigit() or len(value) > 6 or int(value) > MAX_RETRY_AFTER_S:
        return None
    return int(value)


def stream_tap(family: WireFamily, strip_usage: bool) -> StreamTap:
    """The tap for a streamed answer: the family's own (``stream_tap``) if it has one, else an
    ``SseTap`` over its ``usage_parser()``. Both pass bytes through and end with ``usage``."""
    own = family.stream_tap
    if own is not None:
        return own(strip_usage)
    return SseTap(family.usage_parser(), strip_usage)  # positional: see Gateway.relay


_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Relay:
    """``ResponseHandler`` for one upstream exchange of one ``Call``."""

    __slots__ = ("call", "sink", "family", "state", "done", "_tap", "_body_tap", "_body",
                 "_status", "_on_complete", "_stream", "_perf", "_filter", "_write", "_end",
                 "_write_frame", "_chunks", "_sample_ns", "_send_held", "_corked", "_upstream",
                 "_can_pipe", "_on_ended", "_retry_after")

    def __init__(
        self,
        call: Call,
        sink: ResponseSink,
        family: WireFamily,
        stream: bool,
        hide_usage: bool,
        on_complete: Callable[[], object],
        on_ended: Callable[[Call, object], None] | None = None,
        response_filter: ResponseFilter | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.call = call
        self.sink = sink
        self.family = family
        self.state = WAITING
        # the caller's loop when it has it: get_running_loop() is a getpid syscall on 3.11
        if loop is None:
            loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self._stream = stream
        self._tap = stream_tap(family, hide_usage) if stream else None
        # A non-streamed answer of any size: only its two ends are kept to read its usage.
        self._body_tap = None if stream else (family.body_tap or BodyTap)(family.usage_key)
        self._body = bytearray()  # a refused exchange's error body (bounded)
        self._status = 0
        self._retry_after: bytes | None = None  # a refusal's Retry-After, as the provider sent it
        self._on_complete = on_complete
        """Journals the record before the response completes; what it returns, if not None,
        goes to ``on_ended`` with the call once the response has completed (the counting that
        need not hold up the client's end: ``Gateway.journal``, ``Gateway.count``)."""
        self._on_ended = on_ended
        self._perf = time.perf_counter_ns
        self._chunks = 0  # on_chunk reads so far: one in _SAMPLE is timed (call.relay_ns)
        self._sample_ns = 0
        self._corked = False  # the sink holds this read's writes until on_read_end
        self._upstream = None  # the provider's connection, while it may pipe (bind_pipe)
        self._filter = response_filter
        if response_filter is None:
            self._write, self._end = sink.write, sink.end
            # an HTTP/1.1 sink takes a provider's chunk frame as it is (H1Exchange.write_frame);
            # looked up on the class, where a wrapper (http.exchange.SinkWrapper) says None: the
            # frames must not pass by the wrapper's own write (StreamCostSink's cost)
            self._write_frame = sink.write_frame if hasattr(type(sink), "write_frame") else None
        else:
            self._write, self._end = self._filtered_write, self._filtered_end
            self._write_frame = None
        # a stream's client may read a whole answer before the record (H1Exchange.send_held)
        self._send_held = (sink.send_held if stream and response_filter is None
                           and hasattr(type(sink), "send_held") else None)
        # a pipe needs a tap it can see past (an SseTap) and a sink taking frames as they are
        self._can_pipe = type(self._tap) is SseTap and self._write_frame is not None

    # ---- ResponseHandler -----------------------------------------------------------
    def on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.state is not WAITING:
            return
        self._status = status
        if not 200 <= status < 300:
            self.state = REFUSED  # body collected in on_data, mapped in on_end
            self._retry_after = header_value(headers, b"retry-after")
            return
        t0 = self._perf()
        self.state = STREAMING
        call = self.call
        call.status = status
        ours = [(b"x-request-id", call.request_id.encode()), *call.response_headers]
        if self._stream:
            metrics.active_streams_for(call.provider).inc()
            out = _SSE_HEADERS + ours
            length = None
        else:
            content_type = header_value(headers, b"content-type") or b"application/json"
            out = [(b"content-type", content_type)] + ours
            raw_length = header_value(headers, b"content-length")
            length = int(raw_length) if raw_length and raw_length.isdigit() else None
        call.head_ns = t0
        out.append((b"x-kraken-overhead-ms", call.overhead_header()))
        self.sink.cork()  # head and the bytes read with it leave in one write
        self._corked = True
        if self._filter is None:
            self.sink.start(status, out, length)
        else:
            self._filtered_start(status, out)
        call.relay_ns += self._perf() - t0

    def on_data(self, data: bytes) -> None:
        state = self.state
        if state is STREAMING:
            self.sink.cork()  # the response may end in this read: its last bytes leave with it
            self._corked = True
            t0 = self._perf()
            call = self.call
            if not call.ttfb_ns:
                call.ttfb_ns = t0
            if self._tap is not None:
                out = self._tap.feed(data)
                if out:
                    self._write(out)
            else:
                self._write(data)
                self._body_tap.feed(data)
            call.relay_ns += self._perf() - t0
            if self._send_held is not None:
                # the head is still held (it came in this read): it and this read's answer
                # leave now, not after the response's end is handled (_finish would send them
                # then, before the record): a whole answer's first byte leaves ~200 bytecodes
                # sooner, in the same one write. Once the head is out this sends nothing, so
                # a later read that ends the stream still leaves with the end, after the record.
                self._send_held()
        elif state is REFUSED and len(self._body) < MAX_ERROR_BODY:
            self._body += data[: MAX_ERROR_BODY - len(self._body)]

    def on_chunk(self, data: bytes, frame: bytes) -> None:
        """A read of whole chunks (``ResponseParser.on_chunk``): one, a stream's usual read, or
        several arriving together. Never the response's end, so written at once. ``frame``:
        the chunks as received, framed as Kraken would frame them; sent as they are if the tap
        passed ``data`` on unchanged (the same object) and the sink can take them (a client's
        chunk boundaries may then differ from a re-framed write's)."""
        if self.state is not STREAMING:
            self.on_data(data)
            return
        n = self._chunks = self._chunks + 1
        call = self.call
        if n & _SAMPLE_MASK == 1:  # the 1st, 9th, 17th ... read: timed, stands for 8 reads
            t0 = self._perf()
            if not call.ttfb_ns:
                call.ttfb_ns = t0
        else:
            t0 = 0
        tap = self._tap
        if tap is not None:
            out = tap.feed(data)
            if out is data and self._write_frame is not None:
                self._write_frame(frame, data)
                upstream = self._upstream
                if upstream is not None and tap.at_event_boundary:  # type: ignore[union-attr]
                    target = self.sink.pipe_target(self._unpipe)  # type: ignore[attr-defined]
                    if target is not None:
                        upstream.pipe(target)
            elif out:
                self._write(out)
        else:
            if self._write_frame is not None:
                self._write_frame(frame, data)
            else:
                self._write(data)
            self._body_tap.feed(data)
        if t0:
            self._sample_ns = spent = self._perf() - t0
            call.relay_ns += spent * _SAMPLE

    def bind_pipe(self, upstream) -> None:
        """The provider's connection offers its pipe (``UpstreamConnection.expect``): taken
        where plain reads may pass unseen, an ``SseTap`` and a sink taking frames as they are."""
        if self._can_pipe:
            self._upstream = upstream

    def _unpipe(self) -> None:
        """End the pipe (the client's connection shut, or the response ends). Its reads count
        in ``call.relay_ns`` at the last timed read's time: the pipe itself times none."""
        upstream = self._upstream
        if upstream is not None:
            self._upstream = None
            piped = upstream.unpipe()
            if piped:
                self.call.relay_ns += piped * self._sample_ns

    def on_end(self) -> None:
        state = self.state
        if state is STREAMING:
            call = self.call
            failure = None
            if self._tap is not None:
                tail = self._tap.flush()
                if tail:
                    self._write(tail)
                failure = self._tap.failure  # the provider's own bytes said it failed
                if failure is not None:
                    call.fail(failure)
            else:
                document = self._body_tap.document()
                call.usage = None if document is None else self.family.usage_from_body(document)
            self._finish(DONE if failure is None else FAILED, stream_usage=self._tap is not None)
        elif state is REFUSED:
            err = self.family.map_error(self._status, bytes(self._body))
            wait = self._retry_after
            if wait is not None and isinstance(err, UpstreamError):  # the provider's refusal
                err.retry_after_s = _seconds(wait)
            self._refuse(err if self._filter is None else self._filter.refused(err))
        elif state is WAITING:
            self._refuse(UpstreamError("provider ended the exchange without a response"))

    def on_error(self, exc: Exception) -> None:
        err = exc if isinstance(exc, KrakenError) else UpstreamError("provider connection failed")
        if self.state is STREAMING and not self._stream and not self.sink.started:
            self._retract()  # a held answer: nothing reached the client
            self._refuse(err)
        elif self.state is STREAMING:
            self.call.fail(err)
            if self._stream:
                filt = self._filter
                self.sink.write(self.family.sse_error_event(err) if filt is None else filt.failed(err))
                self._finish(FAILED, stream_usage=True)  # usage already reported is billed
            else:  # a Content-Length body cannot carry an error: cut it short
                self._finish(FAILED, abort=True)
        elif self.state in (WAITING, REFUSED):
            self._refuse(err)

    def on_read_end(self) -> None:
        if self._corked:  # on_head or on_data held this read's writes (on_chunk writes at once)
            self._corked = False
            if self.state is STREAMING:
                self.sink.flush()

    # ---- transitions ---------------------------------------------------------------
    def _settle(self) -> None:
        """The last timed read stood for 8; take back the reads that did not follow it."""
        n = self._chunks
        if n:
            self.call.relay_ns -= self._sample_ns * (_SAMPLE_MASK - (n - 1) % _SAMPLE)
            self._chunks = 0

    def cancel(self) -> None:
        """The client went away (or shutdown): stop writing. Usage the stream reported so far
        (Anthropic's ``message_start``) stays on the call: the provider bills it."""
        self._unpipe()
        self._settle()
        if self.state is STREAMING and self._stream:
            metrics.active_streams_for(self.call.provider).dec()
            self.call.usage = self._tap.usage  # type: ignore[union-attr]
        self.state = CANCELLED

    def _retract(self) -> None:
        """Undo the head of an answer held whole (``CostSink``, a filter's) that the provider
        cut: the client saw none of it, so the exchange ends as refused before the first byte
        (another candidate, or the endpoint's error answer and status on the record)."""
        call = self.call
        call.status = call.head_ns = call.ttfb_ns = 0
        self._settle()

    def _refuse(self, err: KrakenError) -> None:
        self.state = REFUSED
        if not self.done.done():
            self.done.set_exception(err)

    def _finish(self, state: str, abort: bool = False, stream_usage: bool = False) -> None:
        """``stream_usage``: the record takes the tap's usage, read (parsed) once what the
        client is owed has left: a whole answer in one read is not held up by it."""
        self._unpipe()
        if self._stream:
            metrics.active_streams_for(self.call.provider).dec()
        self.state = state
        self._settle()
        if self._send_held is not None and not abort:
            self._send_held()  # a head still held: it and the answer leave before the record
        if stream_usage:
            self.call.usage = self._tap.usage  # type: ignore[union-attr]
        made = self._on_complete()  # the record reaches the journal before the client sees the end
        try:
            if abort:
                self.sink.abort()
            else:
                self._end()
        finally:
            if made is not None and self._on_ended is not None:
                self._on_ended(self.call, made)  # then what only counts it
        if not self.done.done():
            self.done.set_result(None)

    # ---- a declared response filter (the client's format is not the provider's) ------
    def _filtered_start(self, status: int, headers: Headers) -> None:
        head = self._filter.head(status, headers)
        if head is not None:  # else held: the whole answer is written at the end
            self.sink.start(status, head, None)

    def _filtered_write(self, data: bytes) -> None:
        out = self._filter.feed(data)
        if out:
            self.sink.write(out)

    def _filtered_end(self) -> None:
        last = self._filter.end()
        if isinstance(last, bytes):
            if last:
                self.sink.write(last)
            self.sink.end()
        else:
            self.sink.respond(*last)

    @property
    def started(self) -> bool:
        return self.state is not WAITING and self.state is not REFUSED
