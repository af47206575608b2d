"""AWS's binary event-stream framing (``application/vnd.amazon.eventstream``), decoded
incrementally: bytes in, whole messages out, like h11's ``receive_data``/``next_event``.

One message on the wire::

    total length (u32) | headers length (u32) | prelude CRC32 (u32, of the 8 bytes before)
    headers (name length u8, name, value type u8, value) | payload | message CRC32 (of all before)

Every integer is big-endian. The decoder holds at most one incomplete message, and refuses a
message whose prelude announces more than ``max_message`` bytes before buffering it, so a
provider cannot make Kraken buffer without bound. Both CRCs are checked; any fault is an
``EventStreamError`` and the decoder stays failed. ``encode`` is the inverse (the mock's).
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from kraken.errors import UpstreamBadStream

__all__ = ["MAX_MESSAGE", "Decoder", "EventStreamError", "Message", "MessageTooLarge", "encode"]

MAX_MESSAGE = 1 << 20
"""The largest message accepted (AWS's own limit for one event is 16 MiB; a Converse delta is
a few hundred bytes, a metadata event well under a KiB)."""
_PRELUDE = 12
_MIN_MESSAGE = 16  # prelude + message CRC, no headers, no payload
_U32 = struct.Struct(">I")
_PRELUDE_FMT = struct.Struct(">III")
_FIXED = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
"""Value type -> size: byte, short, int, long, timestamp, uuid."""
_INTS = {2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}


class EventStreamError(UpstreamBadStream):
    """The provider's event stream cannot be read (bad CRC, bad lengths, oversized message):
    the provider's fault, so an ``upstream_error`` to the client and in the request record."""

    error_type = "upstream_error"


class MessageTooLarge(EventStreamError):
    """A prelude announced a message over the decoder's bound (refused before buffering it)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded message: its headers (``:event-type``, ``:message-type``, ...) and payload."""

    headers: Mapping[str, object]
    payload: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def _headers(raw: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    i, end = 0, len(raw)
    try:
        while i < end:
            n = raw[i]
            name = raw[i + 1:i + 1 + n].decode()
            i += 1 + n
            kind = raw[i]
            i += 1
            if kind in (0, 1):
                value: object = kind == 0
            elif kind in (6, 7):
                size = (raw[i] << 8) | raw[i + 1]
                value = raw[i + 2:i + 2 + size]
                if len(value) != size:
                    raise EventStreamError("event stream header value is cut short")
                value = value.decode() if kind == 7 else value
                i += 2 + size
            elif kind in _FIXED:
                size = _FIXED[kind]
                chunk = raw[i:i + size]
                if len(chunk) != size:
                    raise EventStreamError("event stream header value is cut short")
                value = struct.unpack(_INTS[kind], chunk)[0] if kind in _INTS else chunk
                i += size
            else:
                raise EventStreamError(f"event stream header type {kind} is unknown")
            out[name] = value
    except (IndexError, UnicodeDecodeError):
        raise EventStreamError("event stream headers are malformed") from None
    if i != end:
        raise EventStreamError("event stream headers overrun their length")
    return out


class Decoder:
    """Feeds bytes, returns the messages they complete; holds one partial message at most."""

    __slots__ = ("_buf", "_max", "failed")

    def __init__(self, max_message: int = MAX_MESSAGE):
        self._buf = bytearray()
        self._max = max_message
        self.failed = False

    @property
    def buffered(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        if self.failed:
            raise EventStreamError("event stream already failed")
        buf = self._buf
        buf += data
        out: list[Message] = []
        start = 0
        try:
            while len(buf) - start >= _PRELUDE:
                total, hlen, crc = _PRELUDE_FMT.unpack_from(buf, start)
                if zlib.crc32(memoryview(buf)[start:start + 8]) != crc:
                    raise EventStreamError("event stream prelude CRC mismatch")
                if total > self._max:
                    raise MessageTooLarge(f"event stream message of {total} bytes is over "
                                           f"the {self._max}-byte bound")
                if total < _MIN_MESSAGE or hlen > total - _MIN_MESSAGE:
                    raise EventStreamError("event stream message lengths are inconsistent")
                if len(buf) - start < total:
                    break
                end = start + total
                view = memoryview(buf)
                if zlib.crc32(view[start:end - 4]) != _U32.unpack_from(buf, end - 4)[0]:
                    raise EventStreamError("event stream message CRC mismatch")
                headers = _headers(bytes(view[start + _PRELUDE:start + _PRELUDE + hlen]))
                out.append(Message(headers, bytes(view[start + _PRELUDE + hlen:end - 4])))
                view.release()
                start = end
        except EventStreamError:
            self.failed = True
            self._buf = bytearray()
            raise
        if start:
            del buf[:start]
        return out


def _encode_headers(headers: Mapping[str, str | bytes | bool]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw = name.encode()
        out += bytes((len(raw),)) + raw
        if isinstance(value, bool):
            out += b"\x00" if value else b"\x01"
        else:
            data = value.encode() if isinstance(value, str) else value
            out += (b"\x07" if isinstance(value, str) else b"\x06") + struct.pack(">H", len(data))
            out += data
    return bytes(out)


def encode(headers: Mapping[str, str | bytes | bool], payload: bytes) -> bytes:
    """One message on the wire (string, bytes and bool headers: what Bedrock sends)."""
    head = _encode_headers(headers)
    total = _PRELUDE + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += _U32.pack(zlib.crc32(prelude))
    body = prelude + head + payload
    return body + _U32.pack(zlib.crc32(body))
