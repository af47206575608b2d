"""Google service-account credentials: an OAuth2 access token from a JSON key file.

Vertex AI takes ``Authorization: Bearer <access token>``. The token comes from the key file's
``token_uri`` through the JWT bearer grant (RFC 7523): a JWT naming the service account
(``iss``), the token endpoint (``aud``) and the ``cloud-platform`` scope, signed RS256 with the
account's private key (``cryptography``), exchanged for a token that lives about an hour.

The token is cached. A request finding it fresh uses it without any I/O; one finding it inside
the refresh margin (``REFRESH_MARGIN_S`` before expiry) still uses it and starts one exchange
in the background; only a request finding no usable token waits. Every waiter shares the one
exchange in flight (single-flight), so a burst of requests costs one exchange. The private key,
the assertion and the token never appear in a log line or an error body: errors name the
account's problem ("no credentials", the token endpoint's OAuth ``error`` code), nothing more.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable
from urllib.parse import quote, urlsplit

import orjson

from kraken import metrics
from kraken.errors import UpstreamError
from kraken.upstream.oneshot import post_form

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "CLOUD_PLATFORM_SCOPE",
    "GRANT_TYPE",
    "REFRESH_MARGIN_S",
    "CredentialsMissing",
    "ServiceAccount",
    "TokenEndpointUnavailable",
    "TokenExchangeFailed",
    "TokenSource",
    "jwt_assertion",
    "load_service_account",
]

log = logging.getLogger("kraken.providers.google_auth")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME_S = 3600
"""Google accepts assertions valid for at most an hour."""
REFRESH_MARGIN_S = 300.0
"""A token this close to expiry is replaced in the background (still used meanwhile)."""
EXPIRY_SAFETY_S = 30.0
"""A token this close to expiry is not sent at all: a request waits for a new one."""
EXCHANGE_TIMEOUT_S = 10.0
REFRESH_RETRY_S = 10.0
"""After a failed background refresh, the next one waits this long (the token still works):
a refusing token endpoint must not get one exchange per request."""
_OAUTH_CODE = re.compile(r"[a-z_]{1,40}")


class CredentialsMissing(UpstreamError):
    """No usable service-account key: the operator's configuration, said once at startup."""

    status = 503
    error_type = "upstream_auth_unavailable"
    code = "provider_credentials_missing"


class TokenEndpointUnavailable(UpstreamError):
    """The token endpoint could not be reached or answered 5xx: retry later."""

    status = 503
    error_type = "upstream_auth_unavailable"
    code = "provider_token_unavailable"


class TokenExchangeFailed(UpstreamError):
    """The token endpoint refused the service account's assertion (e.g. ``invalid_grant``)."""

    status = 502
    error_type = "upstream_auth_failed"
    code = "provider_token_refused"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """What the JWT grant needs from a key file; the private key is never printed."""

    client_email: str
    token_uri: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    private_key_id: str = ""


def load_service_account(path: str) -> tuple[ServiceAccount | None, str | None]:
    """(account, None), or (None, what is wrong) naming the file and the missing field only."""
    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read(1 << 20))
    except OSError as exc:
        return None, f"credentials file {path!r} cannot be read ({exc.strerror or 'error'})"
    except orjson.JSONDecodeError:
        return None, f"credentials file {path!r} is not JSON"
    if not isinstance(doc, dict):
        return None, f"credentials file {path!r} is not a JSON object"
    if doc.get("type", "service_account") != "service_account":
        return None, f"credentials file {path!r} is not a service-account key"
    for name in ("client_email", "private_key", "token_uri"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            return None, f"credentials file {path!r} has no {name}"
    # Imported here: cryptography is ~8 MB of RSS that only a Vertex provider needs.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(doc["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        return None, f"credentials file {path!r}: private_key is not a PEM private key"
    if not isinstance(key, rsa.RSAPrivateKey):
        return None, f"credentials file {path!r}: private_key is not an RSA key"
    if urlsplit(doc["token_uri"]).scheme not in ("http", "https"):
        return None, f"credentials file {path!r}: token_uri is not an http(s) URL"
    key_id = doc.get("private_key_id")
    return ServiceAccount(doc["client_email"], doc["token_uri"], key,
                          key_id if isinstance(key_id, str) else ""), None


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jwt_assertion(account: ServiceAccount, now: int, scope: str = CLOUD_PLATFORM_SCOPE) -> bytes:
    """The signed JWT of RFC 7523 section 2.1: RS256 over ``header.claims``."""
    header = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims = {"iss": account.client_email, "scope": scope, "aud": account.token_uri,
              "iat": now, "exp": now + ASSERTION_LIFETIME_S}
    signing_input = _b64(orjson.dumps(header)) + b"." + _b64(orjson.dumps(claims))
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = account.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input + b"." + _b64(signature)


@dataclass(slots=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float
    """Monotonic time from which a background refresh starts."""
    usable_until: float
    """Monotonic time after which the token is not sent."""


class TokenSource:
    """The cached access token of one service account (see the module docstring).

    ``exchanges`` counts exchanges started (for metrics and tests); ``clock`` is monotonic.
    """

    def __init__(self, provider: str, account: ServiceAccount | None, problem: str | None, *,
                 margin_s: float = REFRESH_MARGIN_S, clock: Callable[[], float] = time.monotonic,
                 post: Callable = post_form):
        self.provider = provider
        self.account = account
        self.problem = problem
        self.exchanges = 0
        self._margin = margin_s
        self._clock = clock
        self._post = post
        self._token: _Token | None = None
        self._inflight: asyncio.Task | None = None
        self._retry_at = 0.0

    async def token(self) -> str:
        """A usable access token: the cached one, or the one exchange in flight's."""
        if self.account is None:
            raise CredentialsMissing(f"provider {self.provider}: {self.problem}")
        now = self._clock()
        token = self._token
        if token is not None and now < token.usable_until:
            if now >= max(token.refresh_at, self._retry_at) and self._inflight is None:
                self._start()  # in the background: this request keeps the current token
            return token.value
        task = self._inflight or self._start()
        try:
            return await asyncio.shield(task)
        except UpstreamError as exc:  # a fresh error per waiter: one shared instance would
            raise type(exc)(exc.message) from None  # grow its traceback with every raise

    def invalidate(self) -> None:
        """Forget the cached token (the provider refused it): the next request exchanges."""
        self._token = None

    def _start(self) -> asyncio.Task:
        self.exchanges += 1
        task = asyncio.get_running_loop().create_task(self._exchange())
        self._inflight = task
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._inflight = None
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here: a background refresh may have no waiter
        outcome = ("ok" if exc is None else
                   "refused" if isinstance(exc, TokenExchangeFailed) else "unavailable")
        metrics.TOKEN_EXCHANGES.labels(self.provider, outcome).inc()
        if exc is not None:
            self._retry_at = self._clock() + REFRESH_RETRY_S
            log.warning("provider %s: OAuth2 token exchange failed: %s", self.provider, exc)

    async def _exchange(self) -> str:
        account = self.account
        assert account is not None
        started = self._clock()
        assertion = jwt_assertion(account, int(time.time()))
        form = b"grant_type=" + quote(GRANT_TYPE, safe="").encode() + b"&assertion=" + assertion
        try:
            status, body = await self._post(account.token_uri, form, EXCHANGE_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise TokenEndpointUnavailable(
                f"provider {self.provider}: the OAuth2 token endpoint is unreachable "
                f"({type(exc).__name__})") from None
        value, lifetime = self._answer(status, body)
        self._token = _Token(value, started + max(lifetime - self._margin, 0.0),
                             started + max(lifetime - EXPIRY_SAFETY_S, 0.0))
        return value

    def _answer(self, status: int, body: bytes) -> tuple[str, float]:
        """(token, lifetime in seconds) from the token endpoint's answer, or the error."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        doc = doc if isinstance(doc, dict) else {}
        if status >= 500 or status == 429:
            raise TokenEndpointUnavailable(
                f"provider {self.provider}: the OAuth2 token endpoint answered {status}")
        if status != 200:
            code = doc.get("error")
            code = code if isinstance(code, str) and _OAUTH_CODE.fullmatch(code) else "refused"
            raise TokenExchangeFailed(
                f"provider {self.provider}: the OAuth2 token endpoint refused the service "
                f"account ({status} {code})")
        value, lifetime = doc.get("access_token"), doc.get("expires_in", 3600)
        if (not isinstance(value, str) or not value or len(value) > 4096
                or not value.isascii() or not value.isprintable() or " " in value):
            raise TokenExchangeFailed(
                f"provider {self.provider}: the OAuth2 token endpoint answered no access token")
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = 3600
        return value, float(lifetime)
