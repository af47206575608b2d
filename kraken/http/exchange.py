"""The protocol-neutral seam between inbound transports and the gateway pipeline.

``h1.py`` and ``h2.py`` turn bytes into a ``Request`` and give each request its own
``ResponseSink``; the gateway never learns which protocol carried the request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kraken.speedups import native, pick

if TYPE_CHECKING:
    from kraken.http.bodystream import BodyStream


@dataclass(slots=True)
class Request:
    """One client request (complete, or an upload still streaming); header names are
    lower-case bytes.

    Treated as immutable (a changed request is a new one: ``dataclasses.replace``) but not
    declared ``frozen``: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, 3.1 µs for this one against 0.8 µs. The same holds for the other
    values made once per request (``Parsed``, ``Lease``, ``Usage``)."""

    method: str
    target: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    peer: str
    received_ns: int
    """``time.perf_counter_ns()`` when the request head was complete."""
    scheme: str = "http"
    http_version: str = "1.1"
    body_stream: BodyStream | None = None
    """An upload's body while it arrives (``kraken.http.bodystream``); ``body`` is then empty."""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (lower-case), or None."""
        return header_value(self.headers, name)


def header_value_py(headers: tuple[tuple[bytes, bytes], ...], name: bytes) -> bytes | None:
    """The first value of the field ``name`` in ``headers``, or None: ``Request.header``.
    (kraken/csrc/header.c is the same scan in C: an SDK's request has 15-20 fields, and a
    lookup that finds none, as for a trace header most clients never send, reads them all.)"""
    for key, value in headers:
        if key == name:
            return value
    return None


header_value_c = native("header_value")
"""The C version, or None where it was not built."""
header_value = pick(header_value_c, header_value_py)
"""What serves: also the relay's lookup among a provider's fields (lower-case from both readers)."""


class FlowControl(Protocol):
    """What a response producer exposes so a slow client can pause it."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class ResponseSink(Protocol):
    """Where the gateway writes one response. Writes never block; backpressure goes to
    the producer registered with ``set_producer``."""

    def start(
        self, status: int, headers: list[tuple[bytes, bytes]], length: int | None
    ) -> None:
        """Send the status line and headers. ``length=None`` streams the body."""

    def write(self, data: bytes) -> None:
        """Send body bytes exactly as given."""

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole response at once (``start`` with ``len(body)``, ``write``, ``end``): the
        head and body leave together, in one write to the socket where the transport can."""

    def cork(self) -> None:
        """Hold writes until ``flush`` or ``end`` (one syscall for bytes that arrived together)."""

    def flush(self) -> None:
        """Send what ``cork`` held; writes may go out at once again until the next ``cork``."""

    def end(self) -> None:
        """Finish the response (flushing anything held); the connection may carry the next request."""

    def abort(self) -> None:
        """Close without finishing: the client sees a truncated response."""

    def set_producer(self, producer: FlowControl | None) -> None:
        """Pause/resume ``producer`` as the client's send buffer fills and drains."""

    @property
    def started(self) -> bool: ...

    @property
    def disconnected(self) -> bool: ...


class SinkWrapper:
    """Base of a sink wrapping the client's to change some of its calls (``start``, ``write``
    ...); the rest of ``ResponseSink`` is forwarded to the wrapped sink, each by name.

    Not through ``__getattr__``: a class that has one gets no specialised attribute loads on
    3.11, its instances' own fields included (every load goes through ``slot_tp_getattr_hook``,
    ~36 a non-stream request), and a name only ``__getattr__`` finds first fails the usual
    lookup, whose AttributeError formats its message."""

    __slots__ = ("_sink",)

    write_frame = None
    """None: a wrapper takes no provider chunk frames as they are, its own ``write`` sees every
    byte (the relay looks ``write_frame`` up on the sink's class)."""
    send_held = None
    """None: a wrapper holds nothing for its client to read before the record."""

    def __init__(self, sink: ResponseSink):
        self._sink = sink

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self._sink.start(status, headers, length)

    def write(self, data: bytes) -> None:
        self._sink.write(data)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._sink.respond(status, headers, body)

    def cork(self) -> None:
        self._sink.cork()

    def flush(self) -> None:
        self._sink.flush()

    def end(self) -> None:
        self._sink.end()

    def abort(self) -> None:
        self._sink.abort()

    def set_producer(self, producer: FlowControl | None) -> None:
        self._sink.set_producer(producer)

    @property
    def started(self) -> bool:
        return self._sink.started

    @property
    def disconnected(self) -> bool:
        return self._sink.disconnected
