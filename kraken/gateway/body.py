"""The request-body checks every JSON endpoint starts with, each a ``BadRequest`` naming the field.

Kraken checks only what it relies on (a JSON object, ``model``, ``stream``, the array it
classifies); the provider validates the rest. The messages are the endpoint's (``missing``).
"""
from __future__ import annotations

import orjson

from kraken.errors import BadRequest

__all__ = ["boolean", "json_object", "nonempty_array", "with_model"]


def json_object(body: bytes, invalid: str = "Request body is not valid JSON",
                not_object: str = "Request body must be a JSON object") -> dict:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest(invalid, code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest(not_object, code="invalid_json")
    return payload


def with_model(body: bytes, missing: str = "'model' is required and must be a string") -> dict:
    """The body as a JSON object that names a ``model`` (a non-empty string)."""
    payload = json_object(body)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(missing, code="invalid_value")
    return payload


def nonempty_array(payload: dict, key: str, message: str) -> None:
    value = payload.get(key)
    if not isinstance(value, list) or not value:
        raise BadRequest(message, code="invalid_value")


def boolean(payload: dict, key: str, message: str) -> None:
    """An optional boolean (absent means false)."""
    if not isinstance(payload.get(key, False), bool):
        raise BadRequest(message, code="invalid_value")
