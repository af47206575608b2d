"""What the engine and the relay ask of a provider family, written down once.

A family shapes one frozen ``UpstreamRequest`` per attempt (a value, like h11's events) and
reads the provider's answer: usage from a stream or a body, the provider's errors. Optional
capabilities (its own stream tap, a usage member other than ``usage``, BYOK key placement)
are attributes every family has, defaulted by ``FamilyBase``, so nothing is probed with
``getattr``. A ``ResponseFilter`` re-says an answer in another wire format (bytes in, bytes
out, never I/O); an endpoint declares one when the client's format is not the provider's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Protocol

from kraken.config import ProviderConfig
from kraken.errors import KrakenError

__all__ = [
    "FamilyBase",
    "Headers",
    "DeferredUsageParser",
    "ResponseFilter",
    "StreamTap",
    "UpstreamRequest",
    "UsageParser",
    "WholeAnswer",
    "WireFamily",
]

Headers = list[tuple[bytes, bytes]]
UsageParser = Callable[[bytes], "tuple[object, bool] | None"]
"""Given one complete SSE event: None, or (usage, hidden) where hidden marks a usage-only event."""


class DeferredUsageParser:
    """A ``UsageParser`` whose conversion can wait: ``find(event)`` gives (raw, hidden) or None,
    ``convert(raw)`` the usage. Called, it does both; the SSE tap calls ``find`` as events pass
    and ``convert`` only when its ``usage`` is read, after the client's first byte (the usage
    event ends a stream, so converting it on the way would delay a whole answer's first byte)."""

    __slots__ = ("find", "convert")

    def __init__(self, find: Callable[[bytes], "tuple[object, bool] | None"],
                 convert: Callable[[object], object]):
        self.find = find
        self.convert = convert

    def __call__(self, event: bytes) -> tuple[object, bool] | None:
        found = self.find(event)
        return None if found is None else (self.convert(found[0]), found[1])


WholeAnswer = tuple[int, Headers, bytes]
"""(status, headers, body): an answer a filter held and rewrote as a whole."""


class StreamTap(Protocol):
    """Passes a stream's bytes through (maybe holding a usage-only event back) and keeps usage."""

    usage: object | None
    failure: KrakenError | None
    """How the stream failed after its first byte, as read in the provider's own bytes (an SSE
    error event, ``stream_failure``; a Bedrock exception event or framing fault; checked after
    ``flush``); the relay records it."""

    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class WireFamily(Protocol):
    """One configured provider's wire format: how its answers are read."""

    name: str
    cfg: ProviderConfig
    usage_key: bytes
    """The usage member of a complete JSON answer (the relay's ``BodyTap`` looks for it)."""
    stream_tap: Callable[[bool], StreamTap] | None
    """The family's own tap for a streamed answer (given ``hide_usage``); None: the relay's SSE
    tap over ``usage_parser()``."""
    authorized: Callable[[Headers, str], Headers] | None
    """Shaped headers with a customer's own key (BYOK) as the only credential; None: this
    family takes no customer keys (managed access only)."""
    signed: Callable[[Headers], Awaitable[Headers]] | None
    """The headers with a credential that may need an await when sent (Vertex AI: a cached
    OAuth2 token, exchanged only when due); None: the shaped headers are complete."""

    def for_model(self, model: str) -> WireFamily:
        """The family that speaks for ``model`` (a provider with several publishers, Vertex AI,
        has one per publisher); most families speak for every model themselves."""

    def usage_parser(self) -> UsageParser: ...
    def usage_from_body(self, body: bytes) -> object | None: ...
    def map_error(self, status: int, body: bytes) -> KrakenError: ...
    def sse_error_event(self, exc: KrakenError) -> bytes: ...


class FamilyBase:
    """The optional capabilities' defaults: ``usage``, the relay's SSE tap, no BYOK."""

    __slots__ = ()
    usage_key = b"usage"
    stream_tap: Callable[[bool], StreamTap] | None = None
    body_tap: Callable[[bytes], object] | None = None
    """The family's own reader of a non-streamed answer (``feed``, ``document``); None: the
    relay's ``BodyTap`` over ``usage_key`` (a file download: ``openai_files.JsonlUsageTap``)."""
    authorized: Callable[[Headers, str], Headers] | None = None
    signed: Callable[[Headers], Awaitable[Headers]] | None = None

    def for_model(self, model: str) -> WireFamily:
        return self


@dataclass(frozen=True, slots=True, init=False)
class UpstreamRequest:
    """One request to a provider, as its family shaped it, and who reads the answer."""

    target: str
    headers: Headers
    body: bytes
    family: WireFamily
    """Reads the answer: usage tap, usage of a body, error mapping, BYOK key placement."""
    hide_usage: bool = False
    """Kraken asked for a usage event the client did not: the relay removes it."""
    method: str = "POST"

    def __init__(self, target: str, headers: Headers, body: bytes, family: WireFamily,
                 hide_usage: bool = False, method: str = "POST"):
        # The generated frozen __init__ calls object.__setattr__ per field: 0.71 us here,
        # 0.46 us through the slots' own setters (one per request; still frozen after it).
        _SET_TARGET(self, target)
        _SET_HEADERS(self, headers)
        _SET_BODY(self, body)
        _SET_FAMILY(self, family)
        _SET_HIDE_USAGE(self, hide_usage)
        _SET_METHOD(self, method)


_SET_TARGET, _SET_HEADERS, _SET_BODY, _SET_FAMILY, _SET_HIDE_USAGE, _SET_METHOD = (
    UpstreamRequest.__dict__[name].__set__
    for name in ("target", "headers", "body", "family", "hide_usage", "method"))


class ResponseFilter(Protocol):
    """Re-says one provider answer in the client's wire format; the relay feeds it the
    provider's bytes (after tapping them for usage) and writes what it yields."""

    def head(self, status: int, headers: Headers) -> Headers | None:
        """The client's head now (streamed, no length), or None: held until ``end``."""

    def feed(self, data: bytes) -> bytes:
        """Client bytes for the next provider bytes (maybe none yet)."""

    def end(self) -> bytes | WholeAnswer:
        """The stream's last client bytes, or the whole answer a held head was waiting for."""

    def failed(self, exc: KrakenError) -> bytes:
        """The client's error event for a stream that broke after its first byte."""

    def refused(self, exc: KrakenError) -> KrakenError:
        """A provider error before the first byte, as the client's format says it."""
