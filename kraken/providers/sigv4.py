"""AWS Signature Version 4 (the ``AWS4-HMAC-SHA256`` algorithm), with hashlib and hmac only.

Why not botocore: its import alone costs ~100 ms and tens of MB, and its signer copies the
request through several objects on every call. What a request costs here: one SHA-256 of the
body, one of the canonical request and one HMAC; the four-HMAC signing key depends only on the
date, region and service, so ``Signer`` derives it once per UTC day.

The canonical request follows the published algorithm: the path as sent on the wire is
URI-encoded once more (every service but S3 signs a double-encoded path: a Bedrock model id's
``:`` travels as ``%3A`` and is signed as ``%253A``), query pairs are encoded and sorted, header
names are lower-cased and sorted, values trimmed with inner runs of spaces collapsed.
``tests/providers/test_bedrock_sigv4.py`` checks this against AWS's published test-suite vectors.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "Credentials",
    "Signer",
    "amz_date",
    "authorization",
    "canonical_request",
    "signing_key",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"  # with letters and digits: the only characters SigV4 leaves unencoded


@dataclass(frozen=True, slots=True)
class Credentials:
    """An AWS key pair, and the session token that comes with temporary credentials."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)


def amz_date(now: float | None = None) -> str:
    """``X-Amz-Date``'s basic ISO 8601 form, UTC: ``20150830T123600Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe=_UNRESERVED),
                      quote(unquote(value), safe=_UNRESERVED)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(canonical header block, signed header names) for the headers to sign."""
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    names = sorted(merged)
    block = "".join(f"{n}:{','.join(merged[n])}\n" for n in names)
    return block, ";".join(names)


@lru_cache(maxsize=256)
def _canonical_uri(path: str) -> str:
    """The path encoded once more (cached: a provider's paths are one per configured model)."""
    return quote(path, safe="/" + _UNRESERVED)


def canonical_request(method: str, path: str, query: str, headers: Iterable[tuple[str, str]],
                      payload_hash: str) -> tuple[str, str]:
    """(canonical request, signed header names); ``path`` as sent on the wire."""
    block, signed = _canonical_headers(headers)
    uri = _canonical_uri(path or "/")
    return (f"{method}\n{uri}\n{_canonical_query(query)}\n{block}\n{signed}\n{payload_hash}",
            signed)


def authorization(credentials: Credentials, key: bytes, scope: str, date_time: str,
                  canonical: str, signed: str) -> str:
    """The ``Authorization`` value for one canonical request under a derived ``key``."""
    to_sign = f"{ALGORITHM}\n{date_time}\n{scope}\n{_sha256(canonical.encode())}"
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}")


class Signer:
    """Signs requests for one key pair, region and service; the signing key is derived once
    per UTC date (one request per day pays the four HMACs)."""

    __slots__ = ("_date", "_key", "credentials", "region", "service")

    def __init__(self, credentials: Credentials, region: str, service: str):
        self.credentials = credentials
        self.region = region
        self.service = service
        self._date = ""
        self._key = b""

    def key(self, date: str) -> bytes:
        if date != self._date:
            self._key = signing_key(self.credentials.secret_access_key, date, self.region,
                                    self.service)
            self._date = date
        return self._key

    def sign(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
             body: bytes, date_time: str | None = None) -> list[tuple[str, str]]:
        """``headers`` (``host`` among them) plus ``x-amz-date``, the session token if any, and
        ``authorization``; every header given is signed."""
        date_time = date_time or amz_date()
        out = [*headers, ("x-amz-date", date_time)]
        if self.credentials.session_token:
            out.append(("x-amz-security-token", self.credentials.session_token))
        canonical, signed = canonical_request(method, path, query, out,
                                              _sha256(body) if body else EMPTY_SHA256)
        date = date_time[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        out.append(("authorization", authorization(self.credentials, self.key(date), scope,
                                                   date_time, canonical, signed)))
        return out
