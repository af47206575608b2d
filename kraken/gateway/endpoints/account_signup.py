"""Self-service sign-up on the client listener (issue 15; ``[email] signup = true``).

    POST /v1/account/signup            {"email": ...} -> 202, always the same answer
    GET  /v1/account/signup/confirm    ?token=...     -> a page with one "create" button
    POST /v1/account/signup/confirm    token=...      -> the new account and its first key, once

No key, no password, no cookie. The GET only shows a form: a mail scanner that fetches the
link uses nothing up; the POST does (the pages: link_pages.py). Requests are limited per
client address and per email address (``per_ip_per_hour``, ``per_email_per_hour``) on a
limiter of the ``[limits]`` backend (memory, or Redis shared by every process) with a one-hour
window, counted under keyed hashes: neither address is kept in clear. The rules are
kraken/accounts/signup.py.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from kraken.accounts import signup
from kraken.accounts import validation as v
from kraken.config.sections import EmailConfig, LimitsConfig
from kraken.errors import MethodNotAllowed, RateLimited
from kraken.gateway.endpoints.account import json_body
from kraken.gateway.endpoints.link_pages import (JSON_HEADERS, PAGE_HEADERS, confirm_page,
                                                 is_form, page, posted_token, query_token)
from kraken.http.exchange import Request, ResponseSink
from kraken.policy.ratelimit import (LimitPolicy, Limiter, MemoryLimiter, RateLimitExceeded,
                                     ip_bucket)

if TYPE_CHECKING:
    from kraken.gateway.pipeline import Gateway

PATH = "/v1/account/signup"
CONFIRM = signup.CONFIRM_PATH
WINDOW_S = 3600.0


class SignupRateLimited(RateLimited):
    """Too many sign-up requests for one email address or from one client address."""

    code = "signup_rate_limited"


@dataclass(frozen=True, slots=True)
class _Bucket:
    """What the limiter counts: a keyed hash standing for an address, with its hourly limit."""

    key_id: str
    rpm: int
    tpm: int = 0
    max_concurrent: int = 0


def build_limiter(limits: LimitsConfig) -> Limiter:
    """A limiter of the configured backend with a one-hour window, apart from the keys'. It
    holds no slots, so its lease is the window too: an entry (a hashed address) is forgotten
    an hour after its last request, not the default lease later."""
    policy = LimitPolicy(window_s=WINDOW_S, lease_s=WINDOW_S, ip_auth_failures=0,
                         ipv6_prefix=limits.ipv6_prefix)
    if limits.backend != "redis":
        return MemoryLimiter(policy, max_keys=100_000)
    from kraken.policy.redis_limits import RedisLimiter

    return RedisLimiter(limits.redis_url, ip_salt=limits.ip_salt, policy=policy,
                        fail_open=limits.fail_open, timeout_s=limits.redis_timeout_s,
                        retry_s=limits.redis_retry_s, prefix="kraken:signup:")


class SignupApi:
    """The three routes, the limiter and the settings."""

    def __init__(self, gateway: Gateway, store, cfg: EmailConfig, limits: LimitsConfig):
        self.gateway = gateway
        self.store = store
        self.cfg = cfg
        self.limiter = build_limiter(limits)
        self._salt = (limits.ip_salt or secrets.token_hex(32)).encode()
        self._ipv6_prefix = limits.ipv6_prefix

    async def aclose(self) -> None:
        await self.limiter.aclose()

    def _hashed(self, kind: str, value: str) -> str:
        return kind + ":" + hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()[:32]

    async def _limit(self, kind: str, value: str, per_hour: int, what: str) -> None:
        try:
            await self.limiter.acquire(_Bucket(self._hashed(kind, value), per_hour))
        except RateLimitExceeded as exc:
            raise SignupRateLimited(f"Too many sign-up requests {what}; retry later",
                                    retry_after_s=exc.retry_after_s, limit=per_hour) from None

    async def request(self, req: Request, sink: ResponseSink) -> None:
        """``POST /v1/account/signup``: 202 whether or not the address has an account."""
        if req.method != "POST":
            raise MethodNotAllowed(f"Use POST for {PATH}", allow="POST")
        client = self.gateway.client_address.of(req.peer, req.header(b"x-forwarded-for"))
        await self._limit("ip", ip_bucket(client, self._ipv6_prefix), self.cfg.per_ip_per_hour,
                          "from this address")
        email = v.email(json_body(req, ("email",)).get("email"))
        await self._limit("email", email.lower(), self.cfg.per_email_per_hour,
                          "for this email address")
        await signup.request_link(self.store, self.cfg, email)
        minutes = max(1, round(self.cfg.link_ttl_s / 60))
        sink.respond(202, JSON_HEADERS, orjson.dumps({
            "status": "accepted",
            "message": "If this address can receive email, a sign-up link is on its way. "
                       f"It works once, within {minutes} minutes."}))

    async def confirm(self, req: Request, sink: ResponseSink) -> None:
        """GET: the confirmation page (uses nothing up). POST: create the account."""
        if req.method == "GET":
            token = signup.check_token(query_token(req))
            if not await signup.link_live(self.store, token):
                raise signup.LinkGone("This sign-up link was already used or has expired; "
                                      "ask for a new one")
            sink.respond(200, PAGE_HEADERS, confirm_page(
                "Create your Kraken account",
                "Press the button to create your account and see your first API key.",
                "Create my account", CONFIRM, token))
            return
        if req.method != "POST":
            raise MethodNotAllowed(f"Use GET or POST for {CONFIRM}", allow="GET, POST")
        token = signup.check_token(posted_token(req))
        done = await signup.confirm(self.store, token)
        if is_form(req):
            sink.respond(201, PAGE_HEADERS, key_page(done))
            return
        sink.respond(201, JSON_HEADERS, orjson.dumps({
            "customer": done.customer.as_dict(), "key": done.key.key.as_dict(),
            "secret": done.key.plaintext}))




def key_page(done: signup.SignedUp) -> bytes:
    """The key, shown this once (the page is not stored by the browser's cache)."""
    return page("Your Kraken account is ready", (
        f"<p>Account <code>{html.escape(done.customer.id)}</code>. Your API key, shown only "
        "this once; copy it now:</p>"
        f"<p><code>{html.escape(done.key.plaintext)}</code></p>"
        "<p>Send it as <code>Authorization: Bearer &lt;key&gt;</code>.</p>"))


def register(gateway: Gateway, store, cfg: EmailConfig, limits: LimitsConfig) -> SignupApi:
    """Serve sign-up on ``gateway``'s listener (call only when ``cfg.signup``); the routes are
    exact paths, so they win over the account API's ``/v1/account/*``."""
    api = SignupApi(gateway, store, cfg, limits)
    gateway.add_endpoint(PATH, api.request, None)
    gateway.add_endpoint(CONFIRM, api.confirm, None)
    return api
