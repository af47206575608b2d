"""The request-body checks every JSON endpoint starts with, each a ``BadRequest`` naming the field.

Kraken checks only what it relies on (a JSON object, ``model``, ``stream``, the array it
classifies); the provider validates the rest. The messages are the endpoint's (``missing``).
It also bounds nesting: every shaped request is re-encoded, and orjson encodes at most 253
levels (it parses 1,024), so a deeper body would fail later, as a 500, instead of as the
client's 400.
"""
from __future__ import annotations

import orjson

from kraken.errors import InvalidJson, InvalidValue

__all__ = ["MAX_DEPTH", "boolean", "json_object", "nonempty_array", "with_model"]

MAX_DEPTH = 128
"""Deepest nesting accepted in a request body (the body itself is level 1): far beyond real
requests (tool schemas included), with room for what shaping adds below orjson's limit."""
TOO_DEEP = f"Request body is nested too deeply (at most {MAX_DEPTH} levels)"


def json_object(body: bytes, invalid: str = "Request body is not valid JSON",
                not_object: str = "Request body must be a JSON object") -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJson(invalid) from None
    if not isinstance(payload, dict):
        raise InvalidJson(not_object)
    if _too_deep(body, payload):
        raise InvalidJson(TOO_DEEP)
    return payload


def _too_deep(body: bytes, payload: dict) -> bool:
    """Whether ``payload`` nests deeper than ``MAX_DEPTH``; a walk without recursion, skipped
    (two C scans) when the body has too few brackets to be that deep."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False
    level: list[tuple[object, int]] = [(payload, 1)]
    while level:
        value, depth = level.pop()
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, (dict, list)):
                if depth >= MAX_DEPTH:
                    return True
                level.append((child, depth + 1))
    return False


def with_model(body: bytes, missing: str = "'model' is required and must be a string") -> dict:
    """The body as a JSON object that names a ``model`` (a non-empty string)."""
    payload = json_object(body)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidValue(missing)
    return payload


def nonempty_array(payload: dict, key: str, message: str) -> None:
    value = payload.get(key)
    if not isinstance(value, list) or not value:
        raise InvalidValue(message)


def boolean(payload: dict, key: str, message: str) -> None:
    """An optional boolean (absent means false)."""
    if not isinstance(payload.get(key, False), bool):
        raise InvalidValue(message)
