"""``POST /v1/account/wallet/checkout``: a wallet top-up through a Stripe Checkout Session.

Kraken only creates the session (``POST {api_base}/v1/checkout/sessions``, form-encoded, the
secret key as Bearer) and hands back its ``url``; the payment is credited later by the
existing signed webhook, which finds the customer under ``customer_metadata_key`` in the
session's metadata (and the PaymentIntent's). One short-lived HTTP/1.1 connection per top-up
over plain asyncio streams: rare, off the metered path, so no pool and no new dependency."""
from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlencode, urlsplit

import orjson

from kraken.accounts import service
from kraken.errors import KrakenError, UpstreamError
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller, json_body
from kraken.http.exchange import Request

FIELDS = ("amount_usd", "success_url", "cancel_url")
MIN_USD, MAX_USD = 1, 10_000
TIMEOUT_S = 20.0
MAX_RESPONSE = 256 * 1024


class TopUpUnavailable(KrakenError):
    """No Stripe secret key is configured."""

    status = 503
    error_type = "service_unavailable"
    code = "topup_unavailable"


class StripeFailed(UpstreamError):
    """Stripe refused or did not answer the Checkout Session request."""

    code = "stripe_failed"


def _amount_cents(body: dict) -> int:
    amount = body.get("amount_usd")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) \
            or not MIN_USD <= amount <= MAX_USD:
        raise service.ValidationError("amount_usd", f"must be between {MIN_USD} and {MAX_USD}")
    return round(amount * 100)


def _url(body: dict, field: str, default: str) -> str:
    value = body.get(field, default)
    if not isinstance(value, str) or len(value) > 2048 \
            or not value.startswith(("https://", "http://")):
        raise service.ValidationError(field, "must be an http(s) URL")
    return value


def session_form(customer_id: str, cents: int, metadata_key: str, success_url: str,
                 cancel_url: str) -> bytes:
    """The Checkout Session's form fields: one USD line item of ``cents``, the customer in
    both the session's and the PaymentIntent's metadata (either event credits the wallet)."""
    return urlencode([
        ("mode", "payment"),
        ("success_url", success_url),
        ("cancel_url", cancel_url),
        ("client_reference_id", customer_id),
        ("line_items[0][quantity]", "1"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", str(cents)),
        ("line_items[0][price_data][product_data][name]", "Kraken wallet top-up"),
        (f"metadata[{metadata_key}]", customer_id),
        (f"payment_intent_data[metadata][{metadata_key}]", customer_id),
    ]).encode()


async def post_form(base: str, path: str, secret: str, form: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 POST with ``Connection: close``; (status, body), body bounded."""
    url = urlsplit(base)
    tls = ssl.create_default_context() if url.scheme == "https" else None
    port = url.port or (443 if tls else 80)
    prefix = url.path.rstrip("/")
    head = (f"POST {prefix}{path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {secret}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(form)}\r\nConnection: close\r\n\r\n").encode()
    reader, writer = await asyncio.open_connection(url.hostname, port, ssl=tls)
    try:
        writer.write(head + form)
        await writer.drain()
        raw = await reader.read(MAX_RESPONSE + 8192)
        while len(raw) <= MAX_RESPONSE + 8192:
            more = await reader.read(65536)
            if not more:
                break
            raw += more
    finally:
        writer.close()
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise StripeFailed("Stripe answered something that is not HTTP")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        body = _unchunk(body)
    return int(status_line[1]), body


def _unchunk(data: bytes) -> bytes:
    out, rest = bytearray(), data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return bytes(out)


async def checkout(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Create a Checkout Session crediting the caller's customer; its ``url`` and ``id``."""
    body = json_body(req, FIELDS)
    cents = _amount_cents(body)
    cfg = api.stripe
    if cfg is None or not cfg.api_key:
        raise TopUpUnavailable("top-ups are not configured (no Stripe secret key)")
    form = session_form(caller.customer_id, cents, cfg.customer_metadata_key,
                        _url(body, "success_url", cfg.checkout_success_url),
                        _url(body, "cancel_url", cfg.checkout_cancel_url))
    try:
        async with asyncio.timeout(TIMEOUT_S):
            status, raw = await post_form(cfg.api_base, "/v1/checkout/sessions", cfg.api_key,
                                          form)
    except (OSError, TimeoutError, ValueError) as exc:
        raise StripeFailed(f"Stripe could not be reached ({type(exc).__name__})") from None
    try:
        session = orjson.loads(raw)
    except orjson.JSONDecodeError:
        session = None
    if status != 200 or not isinstance(session, dict) or not session.get("url"):
        raise StripeFailed(f"Stripe refused the Checkout Session (HTTP {status})")
    await api.audit(caller, "wallet.checkout", str(session.get("id"))[:100],
                    caller.customer_id, amount_cents=cents)
    return 200, {"id": session.get("id"), "url": session["url"], "amount_cents": cents,
                 "customer_id": caller.customer_id}
