"""Which HTTP/2 request header blocks are malformed (RFC 9113 §8.1.1, §8.2, §8.3).

``h2limits.GuardedH2Connection`` answers a malformed request with RST_STREAM PROTOCOL_ERROR
(h2 would end the whole connection); this module only says why a block is malformed. Pure
functions, no I/O.
"""
from __future__ import annotations

import re
from typing import Iterable

from kraken.h2common import connection_specific

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]").search
"""A field name is a token (RFC 9110 §5.1), and lower-case in HTTP/2 (RFC 9113 §8.2.1)."""
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$").search


def _field_problem(name: bytes, value: bytes) -> str | None:
    if not name:
        return "empty field name"
    if _BAD_NAME(name):
        return "invalid field name"
    if value and _BAD_VALUE(value):
        return "invalid field value"
    if connection_specific(name, value):
        if name == b"te":
            return "te other than trailers"
        return f"connection-specific field {name.decode()}"
    return None


def request_problem(headers: Iterable[tuple[bytes, bytes]], end_stream: bool) -> str | None:
    """Why this request header block is malformed, or None. CONNECT is well-formed here
    (``h2.py`` answers it 405); extended CONNECT (``:protocol``) is not, as it was never
    enabled by SETTINGS."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    host: bytes | None = None
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return "pseudo-header after a regular field"
            if name not in _REQUEST_PSEUDO:
                return f"unknown pseudo-header {name.decode('ascii', 'replace')}"
            if name in pseudo:
                return f"duplicate {name.decode()}"
            if value and _BAD_VALUE(value):
                return f"invalid {name.decode()}"
            pseudo[name] = value
            continue
        regular = True
        problem = _field_problem(name, value)
        if problem:
            return problem
        if name == b"host":
            if host is not None:
                return "duplicate host"
            host = value
        elif name == b"content-length" and end_stream and value.isdigit() and int(value):
            return "content-length with an empty body"
    method = pseudo.get(b":method")
    if not method:
        return "missing :method"
    if method == b"CONNECT":
        if b":scheme" in pseudo or b":path" in pseudo or b":authority" not in pseudo:
            return "malformed CONNECT"
    else:
        if not pseudo.get(b":scheme"):
            return "missing :scheme"
        path = pseudo.get(b":path")
        if not path:
            return "missing :path"
        if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
            return "invalid :path"
    authority = pseudo.get(b":authority")
    if authority is not None and host is not None and authority != host:
        return "host differs from :authority"
    return None


def trailers_problem(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name[:1] == b":":
            return "pseudo-header in trailers"
        problem = _field_problem(name, value)
        if problem:
            return problem
    return None
