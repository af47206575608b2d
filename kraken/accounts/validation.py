"""Input validation for accounts: every error names the field it is about.

``AccountError`` subclasses are ``KrakenError``s, so the admin API renders them with
``errors.error_body`` (``exc.field`` is the body's ``param``); the CLI prints
``exc.field: exc.message``. Messages never repeat a secret back.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from kraken import errors

EMAIL_MAX = 254
NAME_MAX = 200
PLAN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MODEL_MAX = 200
MODELS_MAX = 256
# A pragmatic address check (RFC 5321 lengths, one '@', a dotted domain of letters, digits and
# hyphens; IDN domains must be given in punycode). Not RFC 5322's full grammar on purpose:
# quoted local parts and IP literals are refused.
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class AccountError(errors.KrakenError):
    """Base of account errors: ``field`` names the offending input (or None); it is also the
    error body's ``param`` (the admin API's)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = self.param = field


class ValidationError(AccountError, errors.BadRequest):
    """Bad input: 400."""

    code = "invalid_value"


class ConflictError(ValidationError):
    """The value is valid but already taken (e.g. the email of another customer): 409."""

    status = 409
    code = "conflict"


class NotFoundError(AccountError, errors.NotFound):
    """No such customer, organisation, member or key: 404."""


class ForbiddenError(AccountError, errors.Forbidden):
    """The role does not allow the action: 403."""


def email(value: Any, field: str = "email") -> str:
    """The normalised address: stripped, domain lower-cased (the local part keeps its case;
    uniqueness is case-insensitive in the table)."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    value = value.strip()
    if not value:
        raise ValidationError(field, "is required")
    if len(value) > EMAIL_MAX:
        raise ValidationError(field, f"must be at most {EMAIL_MAX} characters")
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        raise ValidationError(field, "must be an email address like name@example.com")
    if len(local) > 64 or _LOCAL_RE.fullmatch(local) is None:
        raise ValidationError(field, "has an invalid part before '@'")
    labels = domain.split(".")
    if len(labels) < 2 or any(_LABEL_RE.fullmatch(label) is None for label in labels) \
            or labels[-1].isdigit():
        raise ValidationError(field, "has an invalid domain after '@'")
    return f"{local}@{domain.lower()}"


def text(value: Any, field: str, *, max_len: int = NAME_MAX, required: bool = False) -> str | None:
    """Free text (names): stripped; no control characters; None or '' means absent."""
    if value is None:
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    value = value.strip()
    if not value:
        if required:
            raise ValidationError(field, "is required")
        return None
    if len(value) > max_len:
        raise ValidationError(field, f"must be at most {max_len} characters")
    if _CONTROL_RE.search(value):
        raise ValidationError(field, "must not contain control characters")
    return value


def plan(value: Any, field: str = "plan") -> str:
    if not isinstance(value, str) or PLAN_RE.fullmatch(value) is None:
        raise ValidationError(field, "must be 1-64 letters, digits, '_', '.' or '-'")
    return value


def flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(field, "must be true or false")
    return value


def count(value: Any, field: str, *, allow_none: bool = False) -> int | None:
    """A non-negative integer (0 = the default / unlimited)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be a non-negative integer")
    if value < 0 or value > 2**62:
        raise ValidationError(field, "must be a non-negative integer")
    return value


def usd(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(field, "must be a non-negative number")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValidationError(field, "must be a non-negative number")
    return value


def timestamp(value: Any, field: str, *, now: float) -> float | None:
    """A future Unix time in seconds (None = never)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(float(value)):
        raise ValidationError(field, "must be a Unix time in seconds")
    if float(value) <= now:
        raise ValidationError(field, "must be in the future")
    return float(value)


def models(value: Any, field: str = "allowed_models") -> tuple[str, ...] | None:
    """A model allow-list: None = every model; otherwise 1..256 distinct non-empty names."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValidationError(field, "must be a list of model names")
    if not value:
        raise ValidationError(field, "must name at least one model (omit it to allow all)")
    if len(value) > MODELS_MAX:
        raise ValidationError(field, f"must have at most {MODELS_MAX} entries")
    out: list[str] = []
    for i, m in enumerate(value):
        name = text(m, f"{field}[{i}]", max_len=MODEL_MAX, required=True)
        if name not in out:
            out.append(name)
    return tuple(out)


def models_json(value: tuple[str, ...] | None) -> str | None:
    return None if value is None else json.dumps(list(value))


def models_from_json(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(json.loads(raw))


def identifier(value: Any, field: str) -> str:
    """An id (``cus_...``, ``org_...``, a key id): anything else cannot exist: not found."""
    if not isinstance(value, str) or not value or len(value) > 64:
        raise NotFoundError(field, "no such id")
    return value
