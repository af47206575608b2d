"""The usage of a non-streamed answer, read from bounded windows of its bytes.

A JSON answer can be any size and is relayed as it arrives; the tap keeps only its first and
last ``window`` bytes (memory is bounded whatever the size). OpenAI's and Anthropic's ``usage``
(Google's ``usageMetadata``) is a top-level member written after the content, so it is in the
tail window; the head window covers a provider that writes it first. A body that fits in the
head window is handed over whole, exactly as received.

The tail may start anywhere, even inside a string or a UTF-8 sequence, so the usage key is
recognised without knowing where the window starts: in valid JSON a quote right after ``{`` or
``,`` (bar whitespace) opens a member name, since a quote inside a string is always ``\\"``.
That member counts only if what follows its object closes the document (``}``), or the last
element of a top-level array of chunks (``}]``, Gemini's non-SSE stream).
"""
from __future__ import annotations

import re

__all__ = ["BodyTap", "usage_in_head", "usage_in_tail"]

WINDOW = 64 * 1024
"""Bytes kept at each end of a large body; a usage object (a few hundred bytes) fits many times."""
MAX_CANDIDATES = 8
"""Member names tried from the end of the tail: bounds the work an adversarial body can cause."""

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]]', re.S)
"""A JSON string (skipped whole) or a bracket: all that matters to find where an object ends."""
_WS = b" \t\r\n"


class BodyTap:
    """Keeps the head and tail windows of one non-streamed body; ``document()`` at its end."""

    __slots__ = ("_head", "_key", "_size", "_tail", "_window")

    def __init__(self, key: bytes = b"usage", window: int = WINDOW):
        self._key = key
        self._window = window
        self._head = bytearray()
        self._tail = bytearray()
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Copy what the windows need from the next bytes (amortised: each byte copied twice)."""
        self._size += len(data)
        window = self._window
        head = self._head
        if len(head) < window:
            head += data[: window - len(head)]
        tail = self._tail
        if len(data) >= window:
            tail[:] = data[-window:]
        else:
            tail += data
            if len(tail) > 2 * window:
                del tail[: len(tail) - window]

    def document(self) -> bytes | None:
        """What the family's ``usage_from_body`` should read: the whole body if the head window
        holds it all, else ``{"<key>": <the usage object found>}``, else None."""
        if self._size <= self._window:
            return bytes(self._head)
        found = usage_in_tail(bytes(self._tail), self._key)
        if found is None:
            found = usage_in_head(bytes(self._head), self._key)
        if found is None:
            return None
        return b'{"' + self._key + b'":' + found + b"}"


def usage_in_tail(tail: bytes, key: bytes) -> bytes | None:
    """The last top-level ``key`` object in ``tail``, the last bytes of a JSON document."""
    name = b'"' + key + b'"'
    at = len(tail)
    for _ in range(MAX_CANDIDATES):
        at = tail.rfind(name, 0, at)
        if at < 0:
            return None
        if _opens_member(tail, at):
            start = _object_after(tail, at + len(name))
            end = _object_end(tail, start) if start >= 0 else -1
            if end >= 0 and _closes_document(tail, end):
                return tail[start:end]
    return None


def usage_in_head(head: bytes, key: bytes) -> bytes | None:
    """The first ``key`` object that is a member of the top-level object starting ``head``."""
    if head.lstrip(_WS)[:1] != b"{":
        return None
    name = b'"' + key + b'"'
    depth = 0
    for m in _TOKEN.finditer(head):
        token = m.group()
        if token[0] == 0x22:  # '"'
            if depth == 1 and token == name:
                start = _object_after(head, m.end())
                if start >= 0:
                    end = _object_end(head, start)
                    return head[start:end] if end >= 0 else None
        elif token in b"{[":
            depth += 1
        else:
            depth -= 1
            if depth <= 0:
                return None
    return None


def _opens_member(buf: bytes, at: int) -> bool:
    """Whether the quote at ``at`` opens a member name (preceded by ``{`` or ``,``)."""
    before = buf[:at].rstrip(_WS)[-1:] if at < 256 else buf[at - 256 : at].rstrip(_WS)[-1:]
    return before in (b"{", b",")


def _object_after(buf: bytes, pos: int) -> int:
    """Index of the ``{`` of the value after a member name ending at ``pos``, or -1."""
    n = len(buf)
    while pos < n and buf[pos] in _WS:
        pos += 1
    if pos >= n or buf[pos] != 0x3A:  # ':'
        return -1
    pos += 1
    while pos < n and buf[pos] in _WS:
        pos += 1
    return pos if pos < n and buf[pos] == 0x7B else -1  # '{'


def _object_end(buf: bytes, start: int) -> int:
    """Index just past the ``}`` closing the object opened at ``start``, or -1 if cut off."""
    depth = 0
    for m in _TOKEN.finditer(buf, start):
        token = m.group()
        if token[0] == 0x22:
            continue
        depth += 1 if token in b"{[" else -1
        if depth == 0:
            return m.end()
    return -1


def _closes_document(buf: bytes, pos: int) -> bool:
    """Whether ``buf[pos:]`` is the rest of a top-level object (``...}``) or of the last
    object in a top-level array (``...}]``): balanced members, then only those closers."""
    depth = 0
    for m in _TOKEN.finditer(buf, pos):
        token = m.group()
        if token[0] == 0x22:
            continue
        depth += 1 if token in b"{[" else -1
        if depth < 0:
            rest = buf[m.end():].strip(_WS)
            return token == b"}" and (rest == b"" or rest == b"]")
    return False
