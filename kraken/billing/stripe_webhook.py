"""``POST /v1/webhooks/stripe``: wallet top-ups from Stripe-compatible payment events.

The ``Stripe-Signature`` header is ``t=<unix time>,v1=<hex>[,v1=<hex>...]``; a ``v1`` is
HMAC-SHA256(secret, "<t>.<raw body>") in hex. The raw body is verified as received (never
re-encoded), ``t`` must be within ``tolerance_s`` of now, any listed ``v1`` may match (Stripe
sends several while a secret is rolled), and comparisons are constant-time. The body is
never logged, whatever happens.

Handled events (others, and payments without the customer metadata, are another product's on
the same account: acknowledged with 200 and ignored, as Stripe expects):
``checkout.session.completed`` / ``checkout.session.async_payment_succeeded`` with
``payment_status == "paid"`` and ``payment_intent.succeeded``; the customer is
``metadata.<customer_metadata_key>`` and the amount ``amount_total`` / ``amount_received``
in cents of USD. One payment gives one top-up: the transaction's ref is the PaymentIntent id
when there is one (a Checkout payment fires both events), else the Checkout Session id, so a
redelivered or doubled event is acknowledged as a duplicate.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import orjson

from kraken import metrics
from kraken.billing import wallet
from kraken.billing.guard import BillingGuard
from kraken.errors import InvalidJson, InvalidValue, KrakenError
from kraken.providers.error_formats import OPENAI
from kraken.http.exchange import Request, ResponseSink
from kraken.logs import Throttle
from kraken.store.interface import Store

log = logging.getLogger("kraken.billing.stripe")

PATH = "/v1/webhooks/stripe"
MAX_SIGNATURE_HEADER = 4096
_CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
_OUTCOMES = {o: metrics.STRIPE_WEBHOOKS.labels(o) for o in (
    "top_up", "duplicate", "ignored", "bad_signature", "invalid")}
_REFUSAL_LINES = Throttle()
"""The path is public: anyone may post unsigned bodies in a loop. Each is counted
(``_OUTCOMES``), the warning is throttled."""


class SignatureError(KrakenError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex ``v1`` signature of ``body`` sent at ``timestamp`` (also used by tests)."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(header: bytes | None, body: bytes, secret: str, *, tolerance_s: float,
                     now: float) -> int:
    """Check a ``Stripe-Signature`` header against ``body``; return its timestamp.

    Raises SignatureError naming what is wrong (never echoing the header or the body).
    """
    if not header:
        raise SignatureError("Missing Stripe-Signature header")
    if len(header) > MAX_SIGNATURE_HEADER:
        raise SignatureError("Stripe-Signature header is too long")
    timestamp: int | None = None
    candidates: list[bytes] = []
    for item in header.split(b","):
        key, sep, value = item.strip().partition(b"=")
        if not sep:
            continue
        if key == b"t":
            if timestamp is not None:
                raise SignatureError("Stripe-Signature has more than one t= timestamp")
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("Stripe-Signature t= is not a Unix timestamp") from None
        elif key == b"v1":
            candidates.append(value.strip().lower())
    if timestamp is None:
        raise SignatureError("Stripe-Signature has no t= timestamp")
    if not candidates:
        raise SignatureError("Stripe-Signature has no v1= signature")
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            f"Stripe-Signature timestamp is outside the {int(tolerance_s)} s tolerance")
    expected = sign(secret, timestamp, body).encode()
    matched = False
    for candidate in candidates:  # compare every one: timing does not reveal which matched
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("Stripe-Signature does not match the payload (check the webhook secret)")
    return timestamp


def top_up_of(event: dict, metadata_key: str) -> tuple[str, int, str] | None:
    """(customer id, amount in micro-dollars, ref) for a paid event, None for an ignored one.

    Another product's event on the same Stripe account (a type Kraken does not handle, or a
    payment without ``metadata.<metadata_key>``) is ignored, not refused: Stripe retries a
    refusal for days, then may disable the endpoint. Raises BadRequest naming the field when
    a payment of Kraken's lacks what a top-up needs.
    """
    kind = event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        raise InvalidValue("event must have a 'type' and a 'data.object'")
    if kind not in _CHECKOUT_EVENTS and kind != "payment_intent.succeeded":
        return None
    if not isinstance(obj, dict):
        raise InvalidValue("event must have a 'type' and a 'data.object'")
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or metadata_key not in metadata:
        return None
    if kind in _CHECKOUT_EVENTS:
        if obj.get("payment_status") != "paid":
            return None  # async methods: the top-up comes with async_payment_succeeded
        cents, where = obj.get("amount_total"), "data.object.amount_total"
        pi = obj.get("payment_intent")
        ref_id = pi if isinstance(pi, str) and pi else obj.get("id")
    else:
        cents, where = obj.get("amount_received"), "data.object.amount_received"
        ref_id = obj.get("id")
    customer = metadata[metadata_key]
    if not isinstance(customer, str) or not customer:
        raise InvalidValue(f"data.object.metadata.{metadata_key} must name the Kraken customer")
    currency = obj.get("currency")
    if not isinstance(currency, str) or currency.lower() != "usd":
        raise InvalidValue("data.object.currency must be 'usd' (wallets hold US dollars)")
    if isinstance(cents, bool) or not isinstance(cents, int) or cents <= 0:
        raise InvalidValue(f"{where} must be a positive integer number of cents")
    if not isinstance(ref_id, str) or not ref_id:
        raise InvalidValue("data.object.id must be a string")
    return customer, cents * 10_000, f"stripe:{ref_id}"


class StripeWebhook:
    """The endpoint; register with ``gateway.add_endpoint(PATH, webhook.handle)``."""

    def __init__(self, store: Store, guard: BillingGuard | None, secret: str, *,
                 tolerance_s: float = 300.0, metadata_key: str = "kraken_customer_id",
                 clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("a Stripe webhook secret is required")
        self._store = store
        self._guard = guard
        self._secret = secret
        self._tolerance_s = tolerance_s
        self._metadata_key = metadata_key
        self._clock = clock

    async def handle(self, req: Request, sink: ResponseSink) -> None:
        try:
            status, body = await self._process(req)
        except KrakenError as exc:
            outcome = "bad_signature" if isinstance(exc, SignatureError) else "invalid"
            _OUTCOMES[outcome].inc()
            if (held := _REFUSAL_LINES.due()) is not None:
                log.warning("stripe webhook refused (%s): %s (%d more since the last line)",
                            outcome, exc.message, held)
            status, body = exc.status, OPENAI.render(exc)
        sink.respond(status, [(b"content-type", b"application/json")], body)

    async def _process(self, req: Request) -> tuple[int, bytes]:
        verify_signature(req.header(b"stripe-signature"), req.body, self._secret,
                         tolerance_s=self._tolerance_s, now=self._clock())
        try:
            event = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            raise InvalidJson("Webhook body is not valid JSON") from None
        if not isinstance(event, dict):
            raise InvalidJson("Webhook body must be a JSON object")
        found = top_up_of(event, self._metadata_key)
        event_id = event.get("id") if isinstance(event.get("id"), str) else None
        if found is None:
            _OUTCOMES["ignored"].inc()
            return 200, orjson.dumps({"received": True, "handled": False})
        customer, micros, ref = found
        try:
            txn, created = await wallet.top_up(self._store, customer, micros, ref)
        except wallet.WalletError as exc:
            raise InvalidValue(str(exc)) from None
        if self._guard is not None:
            await self._guard.wallet_changed(self._store, txn.wallet_id)
        _OUTCOMES["top_up" if created else "duplicate"].inc()
        log.info("stripe top-up %s: transaction %d (%s)", "applied" if created else "duplicate",
                 txn.id, (event_id or "")[:64])
        return 200, orjson.dumps({"received": True, "handled": True, "duplicate": not created,
                                  "transaction_id": txn.id})
