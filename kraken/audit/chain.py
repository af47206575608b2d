"""The hash chain itself: pure functions, no I/O.

``hash = sha256(prev_hash || canonical(entry))``. The canonical form commits to salted
digests of ``target``, ``subject`` and (since schema 10) ``actor`` rather than to the values,
so an erasure can blank those columns (GDPR) without breaking the chain, while an edit of
them is still caught: a present value must match its digest. (Entries older than schema 10
commit to the actor itself: theirs cannot be blanked.) Salts are random per entry, so a
digest cannot be matched against a list of guessed ids without the row's salt, and customer
ids are random.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import orjson

GENESIS = "0" * 64
"""``prev_hash`` of the first entry ever written."""

_SECRET_NAMES = re.compile(r"secret|token|password|hash|cipher|api_key|plaintext|master", re.IGNORECASE)
_SECRET_VALUES = re.compile(r"kr_(live|test)_[a-z0-9]+_|sk-[A-Za-z0-9_-]{8,}|\$2[aby]\$\d\d\$")


def new_salt() -> str:
    return secrets.token_hex(16)


def digest(salt: str, value: str | None) -> str:
    """Salted SHA-256 of a redactable column; empty when there was no value."""
    if value is None:
        return ""
    return hashlib.sha256(salt.encode() + b"\0" + value.encode("utf-8", "surrogatepass")).hexdigest()


def canonical_detail(detail: dict[str, Any] | None) -> str:
    """The detail as sorted, compact JSON; refuses anything that looks like a secret."""
    detail = detail or {}
    for key, value in detail.items():
        if _SECRET_NAMES.search(key):
            raise ValueError(f"audit detail field {key!r} looks like a secret")
        if isinstance(value, str) and _SECRET_VALUES.search(value):
            raise ValueError(f"audit detail field {key!r} holds a key-shaped value")
        if not isinstance(value, (str, int, float, bool, type(None), list)):
            raise ValueError(f"audit detail field {key!r} must be a scalar or a list")
    return orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode()


def entry_hash(prev_hash: str, seq: int, ts: float, actor: str, action: str, salt: str,
               target_digest: str, subject_digest: str, detail: str) -> str:
    """sha256(prev_hash || canonical entry), hex."""
    body = orjson.dumps([seq, ts, actor, action, salt, target_digest, subject_digest, detail])
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()
