"""Kraken API keys: the format, generation and bcrypt hashing. No I/O.

A key reads ``kr_<env>_<key id>_<secret>``: ``env`` is ``live`` or ``test``, the key id
(``[a-z0-9]{1,32}``) names the stored hash and may appear in logs and the admin API, the
secret (``[A-Za-z0-9]{24,64}``) never leaves the client. Only bcrypt hashes are stored.
Keys issued from the database end their secret with a checksum (``CHECKED_KEY_PATTERN``);
config-file keys (and the documented demo key) may lack it.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
import zlib

import bcrypt

KEY_PATTERN = r"kr_(live|test)_([a-z0-9]{1,32})_([A-Za-z0-9]{24,64})"
"""Regex for a Kraken key (groups: env, key id, secret); for the README and secret scanners."""

KEY_RE = re.compile(KEY_PATTERN)
"""``KEY_PATTERN`` compiled; use ``fullmatch`` to validate a whole token."""

KEY_ID_RE = re.compile(r"[a-z0-9]{1,32}")
ENVS = ("live", "test")
MAX_KEY_LEN = len("kr_live_") + 32 + 1 + 64
"""Longest possible key (105 bytes): anything longer is rejected before any hashing."""

DEFAULT_ROUNDS = 12
_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits
_BCRYPT_MAX = 72


CHECKED_KEY_PATTERN = r"kr_(live|test)_([a-z0-9]{16})_([A-Za-z0-9]{32})([A-Za-z0-9]{6})"
"""Keys issued from the database (``kraken keys create``, the admin API): a 16-char id, a
32-char secret and a 6-char checksum (CRC-32 of everything before it, base62), so scanners
and Kraken reject a mistyped or made-up key without a lookup. Published in the README."""

CHECKED_KEY_RE = re.compile(CHECKED_KEY_PATTERN)
DB_KEY_ID_LEN = 16
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def checksum(body: str) -> str:
    """Six base62 characters of CRC-32 over ``body`` (``kr_<env>_<id>_<secret>``)."""
    n = zlib.crc32(body.encode("ascii"))
    out = []
    for _ in range(6):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(reversed(out))


def checksum_ok(token: str) -> bool:
    """True if ``token`` has the database-key shape and its checksum matches."""
    if CHECKED_KEY_RE.fullmatch(token) is None:
        return False
    return checksum(token[:-6]) == token[-6:]


def generate_checked_key(env: str = "live") -> tuple[str, str]:
    """A new database key and its id: ``kr_<env>_<16-char id>_<32-char secret><checksum>``.

    63 characters, so bcrypt reads every one of them (below its 72-byte limit)."""
    if env not in ENVS:
        raise ValueError(f"key env must be one of {ENVS}")
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(DB_KEY_ID_LEN))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
    body = f"kr_{env}_{key_id}_{secret}"
    return body + checksum(body), key_id


def parse_key(token: str) -> tuple[str, str] | None:
    """Return ``(key_id, secret)`` for a well-formed key, ``None`` for anything else."""
    if not isinstance(token, str) or len(token) > MAX_KEY_LEN:
        return None
    m = KEY_RE.fullmatch(token)
    if m is None:
        return None
    return m.group(2), m.group(3)


def generate_key(key_id: str | None = None, env: str = "live") -> str:
    """A new random key: 32-char secret (~190 bits), random 12-char id unless one is given."""
    if env not in ENVS:
        raise ValueError(f"key env must be one of {ENVS}")
    if key_id is None:
        key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    elif not isinstance(key_id, str) or KEY_ID_RE.fullmatch(key_id) is None:
        raise ValueError("key id must match [a-z0-9]{1,32}")
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
    return f"kr_{env}_{key_id}_{secret}"


def _material(key: str) -> bytes:
    # bcrypt reads at most 72 bytes (bcrypt>=5 raises beyond that) but a key may be 105 bytes
    # long. Longer keys are pre-hashed with SHA-256 (base64, so no NUL bytes) so that every
    # character counts; keys of 72 bytes or fewer, including every generate_key() default,
    # are bcrypt'ed as-is and so stay compatible with a plain ``bcrypt.hashpw``.
    raw = key.encode("utf-8")
    if len(raw) <= _BCRYPT_MAX:
        return raw
    return base64.b64encode(hashlib.sha256(raw).digest())


def hash_key(key: str, rounds: int = DEFAULT_ROUNDS) -> str:
    """The bcrypt hash of ``key`` (``$2b$...``) to store in the config or the database.

    Raises ValueError for a string that is not a Kraken key: it could never verify.
    """
    if parse_key(key) is None:
        raise ValueError("not a Kraken API key (expected kr_<live|test>_<id>_<secret>)")
    return bcrypt.hashpw(_material(key), bcrypt.gensalt(rounds)).decode("ascii")


def check_key(key: str, hashed: str) -> bool:
    """True if ``key`` matches the bcrypt ``hashed``. Never raises: bad input is just False.

    CPU-heavy (~300 ms at cost 12): call it only off the event loop.
    """
    try:
        return bcrypt.checkpw(_material(key), hashed.encode("ascii"))
    except (ValueError, TypeError, AttributeError, UnicodeError):
        return False
