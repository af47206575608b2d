"""Input validation for the admin API and the CLI: every error names the field.

Text is accepted verbatim (quotes, SQL keywords, any Unicode letters) because all SQL is
parameterised; what is refused is what no field needs: control characters (NUL included),
lone surrogates, over-long values, wrong JSON types, unknown fields.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from kraken.admin.errors import AdminError, invalid

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
"""Shape of every identifier in a path or query (customer, org, key ids)."""
QUERY_VALUE_MAX = 256
"""The longest query value: a model name (kraken/policy/router.py ``MAX_MODEL_NAME``), as a
usage filter or a usage page's ``after``."""


def json_object(body: bytes, allowed: Iterable[str]) -> dict[str, Any]:
    """Parse a JSON object body; unknown fields are an error naming them."""
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AdminError("body: not valid JSON", param="body") from None
    if not isinstance(data, dict):
        raise AdminError("body: must be a JSON object", param="body")
    allowed = set(allowed)
    for key in data:
        if key not in allowed:
            raise invalid(str(key)[:64], f"unknown field (allowed: {', '.join(sorted(allowed))})")
    return data


def text(data: Mapping[str, Any], field: str, *, required: bool = False, max_len: int = 200,
         allow_empty: bool = False) -> str | None:
    """A string field: no control characters, no lone surrogates, at most ``max_len``."""
    if field not in data or data[field] is None:
        if required:
            raise invalid(field, "is required")
        return None
    value = data[field]
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    return clean_text(value, field, max_len=max_len, allow_empty=allow_empty)


def clean_text(value: str, field: str, *, max_len: int = 200, allow_empty: bool = False) -> str:
    if not value and not allow_empty:
        raise invalid(field, "must not be empty")
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters")
    if _CONTROL.search(value):
        raise invalid(field, "must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(field, "must be valid Unicode") from None
    return value


def ident(value: str | None, field: str, *, required: bool = True) -> str | None:
    """An identifier (path segment or query value)."""
    if value is None or value == "":
        if required:
            raise invalid(field, "is required")
        return None
    if not isinstance(value, str) or ID_RE.fullmatch(value) is None:
        raise invalid(field, "must be an id of letters, digits and _.:- (at most 64)")
    return value


def boolean(data: Mapping[str, Any], field: str, *, required: bool = False) -> bool | None:
    if field not in data or data[field] is None:
        if required:
            raise invalid(field, "is required")
        return None
    if not isinstance(data[field], bool):
        raise invalid(field, "must be true or false")
    return data[field]


def choice(value: str | None, field: str, options: Iterable[str], default: str | None = None) -> str | None:
    options = tuple(options)
    if value is None or value == "":
        return default
    if value not in options:
        raise invalid(field, f"must be one of {', '.join(options)}")
    return value


def timestamp(value: str | None, field: str) -> float | None:
    """Unix seconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
        if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
            raise ValueError
        return seconds
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise invalid(field, "must be unix seconds or an ISO 8601 date (2026-01-31)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def query(target: str, allowed: Iterable[str]) -> dict[str, str]:
    """The query string as a dict; unknown or repeated parameters are errors naming them."""
    _, _, qs = target.partition("?")
    allowed = set(allowed)
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(qs, keep_blank_values=True, strict_parsing=False, errors="strict",
                          max_num_fields=50)
    except (ValueError, UnicodeDecodeError):
        raise AdminError("query: malformed query string", param="query") from None
    for key, value in pairs:
        if key not in allowed:
            raise invalid(key[:64], f"unknown query parameter (allowed: {', '.join(sorted(allowed))})")
        if key in out:
            raise invalid(key, "given more than once")
        out[key] = clean_text(value, key, max_len=QUERY_VALUE_MAX, allow_empty=True)
    return out


def path_segment(raw: str) -> str:
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise AdminError("path: not valid UTF-8", param="path") from None
