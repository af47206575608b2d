"""One-time email links: the token a link carries and what the store keeps of it.

Sign-up (signup.py) and email change (email_change.py) both mail a link holding a random
token; only the token's SHA-256 is stored, so a copy of the database opens no link.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable

import anyio

from kraken.accounts import mailer
from kraken.accounts import validation as v
from kraken.config.sections import EmailConfig

TOKEN_BYTES = 32
"""256 random bits per link (at least 128 are needed)."""
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def new_token() -> str:
    """A fresh token: 43 URL-safe characters."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a token (a 256-bit random token needs no salt or slow hash)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def check_token(value: object, what: str = "link") -> str:
    """A token as issued; anything else is a 400 naming ``token`` (``what``: whose link)."""
    if not isinstance(value, str) or _TOKEN_RE.fullmatch(value) is None:
        raise v.ValidationError("token", f"is not a {what} token")
    return value


async def mail_or_withdraw(store, cfg: EmailConfig, address: str, message: tuple[str, str],
                           withdraw: Callable[..., Awaitable[object]]) -> None:
    """Mail ``message`` (subject, text) to ``address``; if the server cannot take it (or the
    call is cancelled), ``withdraw(tx)`` deletes the link first, so that no link nobody
    received stays usable, and the error goes on."""
    try:
        await mailer.send(cfg, address, *message)
    except BaseException:
        with anyio.CancelScope(shield=True):
            async with store.transaction() as tx:
                await withdraw(tx)
        raise
