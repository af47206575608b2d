"""The admin token: random, shown once, stored only as its SHA-256.

SHA-256 (not bcrypt) is enough here: the token carries 256 random bits, so its hash cannot
be searched, and checking it costs microseconds instead of a bcrypt round per admin call.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "kradm_"


def generate_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str | bytes) -> str:
    raw = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def token_matches(presented: bytes | None, stored_hash: str) -> bool:
    """Constant-time check of a ``Bearer`` value's hash against the configured hash."""
    if not stored_hash or presented is None:
        return False
    return hmac.compare_digest(hash_token(presented).encode(), stored_hash.lower().encode())


def bearer(header: bytes | None) -> bytes | None:
    """The token of ``Authorization: Bearer <token>``, or None for anything else."""
    if header is None:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"bearer" or not value.strip():
        return None
    return value.strip()
