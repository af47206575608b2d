"""What every wire family sends and reads alike: its base request headers (the provider key in
the family's own header) and the top-level ``usage`` object of a complete JSON answer."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import orjson

__all__ = ["Headers", "base_headers", "usage_in_body"]

Headers = list[tuple[bytes, bytes]]
U = TypeVar("U")


def base_headers(authority: str, credential: tuple[bytes, bytes] | None) -> tuple[Headers, Headers]:
    """(headers with the operator's ``credential``, the same headers keyless for BYOK)."""
    keyless: Headers = [
        (b"host", authority.encode()),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"user-agent", b"kraken-gateway"),
    ]
    return (keyless + [credential] if credential is not None else list(keyless)), keyless


def usage_in_body(body: bytes, convert: Callable[[dict], U]) -> U | None:
    """``convert(usage)`` for a body's top-level ``usage`` object; None if absent or not JSON
    (the body is already complete and bounded in size)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = obj.get("usage") if isinstance(obj, dict) else None
    return convert(usage) if isinstance(usage, dict) else None
