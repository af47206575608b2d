"""A tap on a relayed SSE stream: finds the usage event, optionally hides it, and notes a
provider's own error event (``failure``: the relay records the stream as failed).

The client receives the provider's bytes unchanged. When the client did not ask for
``stream_options.include_usage``, Kraken asked for it anyway and this tap removes only
the usage-only event; to do that it holds back the bytes of an event that has not ended
yet (bounded by ``max_event_bytes``), which never delays a complete event. When nothing
is hidden, every chunk is written through before the tap looks at it.
"""
from __future__ import annotations

from kraken.providers.family import DeferredUsageParser, UsageParser
from kraken.providers.stream_failure import ERROR_MARK, sse_failure
from kraken.speedups import native, pick

_COMPACT, _SPACED = b'"usage":{', b'"usage": {'
_NOTHING = object()
"""``SseTap._found`` when no usage waits to be converted (a parser may find a None usage)."""


def usage_at_py(data: bytes, start: int = 0) -> int:
    """Where the first non-null ``"usage"`` object (compact or spaced) begins at or after
    ``start``, or -1: plainchunk.USAGE_OBJECT's match, found with two ``bytes.find`` (on
    Debian's Python 3.11 they cost less than that regex's search at every size)."""
    compact, spaced = data.find(_COMPACT, start), data.find(_SPACED, start)
    return compact if spaced < 0 or 0 <= compact < spaced else spaced


usage_at_c = native("usage_at")
"""kraken/csrc/plainchunk.c: ``usage_at_py`` in one memchr-led scan. The two finds scanned a
whole answer twice, since ``"usage":null`` in every OpenAI event defeats their skips: 2.2 us
against 0.78 for a 20-event answer, 6 KB (timeit, Debian's 3.11; ~23,000 instructions under
callgrind). tests/gateway/test_usage_at.py compares the two."""
_usage_at = pick(usage_at_c, usage_at_py)


class SseTap:
    """Splits a byte stream into SSE events without copying the bytes that pass through."""

    __slots__ = ("_tail", "_sep", "_strip", "_parse", "_convert", "_max", "_passthrough",
                 "_found", "_usage", "failure")

    def __init__(self, parse_usage: UsageParser, strip_usage: bool, max_event_bytes: int = 1 << 20):
        self._tail = b""
        self._sep = b"\n\n"
        self._strip = strip_usage
        if type(parse_usage) is DeferredUsageParser:  # found as events pass, converted when read
            self._parse = parse_usage.find
            self._convert = parse_usage.convert
        else:
            self._parse = parse_usage
            self._convert = None
        self._max = max_event_bytes
        self._passthrough = False
        self._found: object = _NOTHING
        """The last usage found and not converted yet (``usage`` converts it)."""
        self._usage: object | None = None
        self.failure = None
        """The first error event the provider sent (``stream_failure``); the relay records it."""

    @property
    def usage(self) -> object | None:
        """The stream's usage: the last usage event's, once one was seen."""
        found = self._found
        if found is not _NOTHING:
            self._found = _NOTHING
            convert = self._convert
            self._usage = found if convert is None else convert(found)
        return self._usage

    @property
    def overflowed(self) -> bool:
        return self._passthrough

    @property
    def at_event_boundary(self) -> bool:
        """Nothing held and events end with a blank line: a read of whole events without a usage
        object needs no look from the tap (``plain_sse_chunk``'s reads, ``Relay.on_chunk``)."""
        return not self._tail and not self._passthrough and self._sep == b"\n\n"

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes from the provider; return the bytes to send the client."""
        if self._passthrough:
            return data
        if not self._tail and data.endswith(self._sep):  # whole events: a stream's usual read
            if data.find(ERROR_MARK) >= 0:
                self._failed(data, self._sep)
            at = _usage_at(data)
            if at < 0:
                return data
            out = self._events(data, self._sep, at)
            return out if self._strip else data
        strip = self._strip
        buf = self._tail + data if self._tail else data
        sep = self._sep
        cut = buf.rfind(sep)
        # find, not `in`: bytes.__contains__ formats a TypeError it clears (3.11)
        if cut < 0 and sep == b"\n\n" and buf.find(b"\r\n\r\n") >= 0:
            self._sep = sep = b"\r\n\r\n"
            cut = buf.rfind(sep)
        if cut < 0:
            out, self._tail = (b"" if strip else data), buf
        else:
            cut += len(sep)
            complete, self._tail = buf[:cut], buf[cut:]
            if complete.find(ERROR_MARK) >= 0:
                self._failed(complete, sep)
            out = self._events(complete, sep)
            if not strip:
                out = data
        if len(self._tail) > self._max:  # an event beyond the bound: stop holding, pass through
            self._passthrough = True
            if strip:
                out += self._tail
            self._tail = b""
        return out

    def _events(self, complete: bytes, sep: bytes, at: int = -1) -> bytes:
        """Parse only the events that carry a usage object; cut a hidden one out. ``at``:
        where the caller found the first one (-1: not looked), so it is not scanned for twice."""
        if at < 0:
            at = _usage_at(complete)
            if at < 0:
                return complete
        n = len(sep)
        kept: list[bytes] = []
        emitted = 0
        while True:
            begin = complete.rfind(sep, 0, at)
            begin = 0 if begin < 0 else begin + n
            end = complete.find(sep, at)  # complete always ends with sep
            found = self._parse(complete[begin:end])
            end += n
            if found is not None:
                self._found, hidden = found
                if hidden and self._strip:
                    kept.append(complete[emitted:begin])
                    emitted = end
            at = _usage_at(complete, end)
            if at < 0:
                break
        if not emitted:
            return complete
        kept.append(complete[emitted:])
        return b"".join(kept)

    def _failed(self, complete: bytes, sep: bytes) -> None:
        """Parse only the events holding ``ERROR_MARK``; keep the first failure one reports."""
        if self.failure is not None:
            return
        n = len(sep)
        at = complete.find(ERROR_MARK)
        while at >= 0:
            begin = complete.rfind(sep, 0, at)
            begin = 0 if begin < 0 else begin + n
            end = complete.find(sep, at)  # complete always ends with sep
            self.failure = sse_failure(complete[begin:end])
            if self.failure is not None:
                return
            at = complete.find(ERROR_MARK, end + n)

    def flush(self) -> bytes:
        """At the end of the stream: the held bytes of an unterminated last event."""
        tail, self._tail = self._tail, b""
        if tail and not self._passthrough:
            if self.failure is None and tail.find(ERROR_MARK) >= 0:
                self.failure = sse_failure(tail)
            found = self._parse(tail)
            if found is not None:
                self._found, hidden = found
                if hidden and self._strip:
                    return b""
        return tail if self._strip else b""
