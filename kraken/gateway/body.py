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
from kraken.speedups import native, pick

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


def nests_deeper_py(value: object, limit: int) -> bool:
    """Whether a dict or list inside ``value`` (a parsed JSON document, itself level 1) is
    deeper than ``limit`` levels; a walk without recursion."""
    if not isinstance(value, (dict, list)):
        return False
    level: list[tuple[dict | list, int]] = [(value, 1)]
    while level:
        container, depth = level.pop()
        for child in container.values() if isinstance(container, dict) else container:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                level.append((child, depth + 1))
    return False


def _too_deep_py(body: bytes, payload: dict) -> bool:
    """The walk, skipped (two C scans of the body) when the body has too few brackets to be
    that deep."""
    return body.count(b"[") + body.count(b"{") > MAX_DEPTH and nests_deeper_py(payload, MAX_DEPTH)


nests_deeper_c = native("nests_deeper")


def _too_deep_c(body: bytes, payload: dict) -> bool:
    """The walk in C: no scan of the body first (that cost as much as parsing it)."""
    return nests_deeper_c(payload, MAX_DEPTH)  # type: ignore[misc]


_too_deep = pick(nests_deeper_c and _too_deep_c, _too_deep_py)
"""Whether ``payload`` (parsed from ``body``) nests deeper than ``MAX_DEPTH``."""


def with_model(body: bytes, missing: str = "'model' is required and must be a string") -> dict:
    """The body as a JSON object that names a ``model`` (a non-empty string)."""
    payload = json_object(body)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidValue(missing, param="model")
    return payload


def nonempty_array(payload: dict, key: str, message: str) -> None:
    value = payload.get(key)
    if not isinstance(value, list) or not value:
        raise InvalidValue(message, param=key)


def boolean(payload: dict, key: str, message: str) -> None:
    """An optional boolean (absent means false)."""
    if not isinstance(payload.get(key, False), bool):
        raise InvalidValue(message, param=key)
