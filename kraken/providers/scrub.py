"""A provider's error before the first byte, as the client should see it, with no key in it.

Every wire family maps errors by the same rules: 401/403 are the gateway's credentials (502,
body not shown); any other 4xx but 429 is relayed with its status and the provider's body,
scrubbed of the provider key and anything key-shaped; 429 stays 429 and 504 stays 504 (both may
fall back); other 5xx are 502. A family adds only its own quirks (Anthropic's 529, Gemini's 400
``API_KEY_INVALID``).
"""
from __future__ import annotations

import re

from kraken.errors import (
    KrakenError, UpstreamCredentialsRejected, UpstreamFailed, UpstreamRateLimited, UpstreamStatus,
    UpstreamTimeout,
)

__all__ = ["provider_error", "scrub"]

_KEYLIKE = re.compile(rb"(sk-[A-Za-z0-9_\-*]{3,}|AIza[0-9A-Za-z_\-]{10,}|kr_(?:live|test)_[A-Za-z0-9_]+)")


def scrub(body: bytes, secret: str) -> bytes:
    """Remove the provider key and anything key-shaped from a provider error body."""
    if secret:
        body = body.replace(secret.encode(), b"[redacted]")
    return _KEYLIKE.sub(b"[redacted]", body)


def provider_error(name: str, secret: str, status: int, body: bytes, *,
                   credentials_rejected: bool = False) -> KrakenError:
    """The shared mapping (see the module docstring); ``credentials_rejected`` marks a status
    other than 401/403 that the family knows to mean its key was refused."""
    if credentials_rejected or status in (401, 403):
        return UpstreamCredentialsRejected(f"provider {name} rejected the gateway's credentials")
    if 400 <= status < 500 and status != 429:
        return UpstreamStatus(status, scrub(body, secret))
    failure = _FAILURES.get(status, UpstreamFailed)
    return failure(f"provider {name} returned {status}")


_FAILURES = {429: UpstreamRateLimited, 504: UpstreamTimeout}
"""Provider statuses with a class of their own; any other failure is ``UpstreamFailed``."""
