"""Reading one field from the start of a ``multipart/form-data`` body, incrementally, no I/O.

An upload (audio, files) is relayed as it arrives; Kraken only needs ``model`` to route it.
The SDKs write form fields before file parts, so ``model`` is among the first parts: the
parser looks at the body's first bytes (at most ``MAX_PREFIX``, ``MAX_PARTS`` parts) and says
where the field's value lies, that more bytes are needed, or that it is not there (a file part
or the bound came first). Nothing else of the body is interpreted or kept.
"""
from __future__ import annotations

import re

from kraken.errors import InvalidValue

__all__ = ["MAX_PARTS", "MAX_PREFIX", "MORE", "Field", "boundary_of", "find_field"]

MAX_PREFIX = 64 * 1024
"""Bytes of the body the field must lie within (headers of a part are a few hundred bytes)."""
MAX_PARTS = 16
MORE = "more"
"""``find_field``'s answer when the bytes so far end before the field's value does."""

_BOUNDARY = re.compile(rb'boundary=(?:"([^"]{1,70})"|([^\s;,"]{1,70}))', re.I)
_NAME = re.compile(rb';\s*name="([^"]*)"', re.I)
_FILENAME = re.compile(rb';\s*filename\*?=', re.I)


class Field:
    """Where one field's value lies in the body: ``body[start:end]``."""

    __slots__ = ("start", "end", "value")

    def __init__(self, start: int, end: int, value: bytes):
        self.start, self.end, self.value = start, end, value


def boundary_of(content_type: bytes | None) -> bytes:
    """The boundary a ``multipart/form-data`` Content-Type names, or a 400."""
    m = _BOUNDARY.search(content_type or b"")
    if m is None:
        raise InvalidValue("Content-Type must be multipart/form-data with a boundary")
    return m.group(1) or m.group(2)


def find_field(buf: bytes, boundary: bytes, name: bytes) -> Field | str | None:
    """Field ``name`` within the parts at the start of ``buf``: a ``Field``, ``MORE`` (the bytes
    end first, under the bounds), or None (a file part, the end or a bound came first)."""
    delimiter = b"--" + boundary
    if not buf.startswith(delimiter):
        return MORE if len(buf) < len(delimiter) and delimiter.startswith(buf) else None
    pos = len(delimiter)
    for _ in range(MAX_PARTS):
        if buf[pos:pos + 2] == b"--":
            return None  # the closing delimiter
        if len(buf) < pos + 2:
            return MORE if pos + 2 <= MAX_PREFIX else None
        if buf[pos:pos + 2] != b"\r\n":
            return None
        head_end = buf.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return MORE if len(buf) < MAX_PREFIX else None
        head = buf[pos + 2:head_end]
        disposition = next((line for line in head.split(b"\r\n")
                            if line[:20].lower() == b"content-disposition:"), b"")
        if _FILENAME.search(disposition):
            return None  # file content starts: the field was not before it
        match = _NAME.search(disposition)
        start = head_end + 4
        end = buf.find(b"\r\n" + delimiter, start)
        if end < 0:
            return MORE if len(buf) < MAX_PREFIX else None
        if match is not None and match.group(1) == name:
            return Field(start, end, buf[start:end])
        pos = end + 2 + len(delimiter)
    return None
