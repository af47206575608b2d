"""Errors are types, mapped once to the provider's wire format.

Every failure Kraken reports is a ``KrakenError`` subclass whose HTTP status, OpenAI-style
error ``type`` and ``code`` are class attributes (h2's ``ProtocolError`` subclasses carry their
code the same way): code matches on ``isinstance``, never on a field someone changed. The
message never contains a key, a key hash or content. ``kraken.providers.error_formats`` turns
an error into each wire format's body; ``error_body`` here is OpenAI's, the transport's own.
"""
from __future__ import annotations

import orjson


class KrakenError(Exception):
    """Base class: ``status`` and ``error_type`` decide the response and the record."""

    status = 500
    error_type = "internal_error"
    code: str | None = None
    param: str | None = None
    """The request field at fault (OpenAI's ``error.param``; the SDKs' ``exc.param``)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


class BadRequest(KrakenError):
    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


class InvalidJson(BadRequest):
    """The body is not JSON, or not the JSON object the endpoint takes."""

    code = "invalid_json"


class InvalidValue(BadRequest):
    """A field is missing or has a value the endpoint cannot take."""

    code = "invalid_value"


class UnsupportedValue(BadRequest):
    """A valid field the chosen provider cannot honour (e.g. ``n`` > 1 for Claude)."""

    code = "unsupported_value"


class UnsupportedParameter(BadRequest):
    """A field the chosen provider has no equivalent for."""

    code = "unsupported_parameter"


class Unauthorized(KrakenError):
    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(KrakenError):
    status = 403
    error_type = "permission_error"
    code = "forbidden"


class NotFound(KrakenError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    """No route serves the model (at all, or on this endpoint)."""

    code = "model_not_found"


class ModelNotAllowed(Forbidden):
    """The key's allow-list or the customer's plan does not include the model."""

    code = "model_not_allowed"


class MethodNotAllowed(KrakenError):
    """A path served here, asked with another method: ``allow`` lists the ones it takes."""

    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str):
        super().__init__(message)
        self.allow = allow

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow.encode())]


class PayloadTooLarge(KrakenError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(KrakenError):
    status = 429
    error_type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int = 1, limit: int = 0):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"retry-after", str(self.retry_after_s).encode()),
            (b"x-ratelimit-limit-requests", str(self.limit).encode()),
            (b"x-ratelimit-remaining-requests", b"0"),
            (b"x-ratelimit-reset-requests", f"{self.retry_after_s}s".encode()),
        ]


class QuotaExceeded(KrakenError):
    """A plan cap, key budget or prepaid balance is used up: 402 by default, 429 where it resets.

    Retrying cannot help until someone tops up, raises the budget or the month turns, so the
    answer says ``x-should-retry: false``: the OpenAI and Anthropic SDKs obey it (they would
    otherwise retry a 429 at once, each retry another refused request)."""

    status = 402
    error_type = "quota_exceeded"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-should-retry", b"false")]


class Overloaded(KrakenError):
    """The metadata queue is full: refuse rather than serve an unrecorded request."""

    status = 503
    error_type = "server_overloaded"
    code = "overloaded"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class DatabaseBusy(KrakenError):
    """Another writer held the database past ``[store] busy_timeout_ms`` (an operator's sqlite3
    shell, a long CLI command): not a fault, so no 500; the same call succeeds shortly."""

    status = 503
    error_type = "server_error"
    code = "store_busy"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", b"1")]


class PoolExhausted(KrakenError):
    """No connection to the provider freed up within ``pool_wait_s``: Kraken's own bound was
    hit, not a provider failure (feeds no breaker, no health average). Another candidate may
    still serve the request."""

    status = 503
    error_type = "pool_exhausted"
    code = "pool_exhausted"

    def __init__(self, message: str, *, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]


class PoolShareExceeded(RateLimited):
    """This key already holds its share of a provider's connections (``per_key_share``):
    a 429 that SDKs retry after ``Retry-After``, so one key cannot starve the others."""

    code = "key_concurrency_exceeded"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]


class TooManyConnections(KrakenError):
    """The per-address connection cap refused a new connection (answered by the listener)."""

    status = 503
    error_type = "server_error"
    code = "too_many_connections"


class RequestRejected(KrakenError):
    """The transport refused a malformed or oversized request: its status and code come from
    the transport's reject table, so here they are the instance's data."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, status: int, code: str | None):
        super().__init__(message)
        self.status = status
        self.code = code


class UpstreamError(KrakenError):
    """The provider could not be reached or failed before its first byte."""

    status = 502
    error_type = "upstream_error"
    retry_after_s: int | None = None
    """The provider's own ``Retry-After`` on its refusal (a 429, a 503), passed on to the
    client so its SDK waits as long as the provider asked instead of retrying at once."""

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after_s is None:
            return []
        return [(b"retry-after", str(self.retry_after_s).encode())]


class UpstreamTimeout(UpstreamError):
    """No answer in time, or the provider itself answered 504."""

    status = 504
    error_type = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    """The provider answered 429: another candidate may still serve the request."""

    status = 429
    error_type = "upstream_rate_limited"


class UpstreamOverloaded(UpstreamError):
    """The provider said it is overloaded (Anthropic's 529)."""

    status = 503
    error_type = "upstream_overloaded"


class UpstreamFailed(UpstreamError):
    """The provider answered 5xx (or a status Kraken cannot relay): the client sees 502."""


class UpstreamCredentialsRejected(UpstreamError):
    """The provider refused the gateway's own key: a 502, the provider's body not shown."""


class ByokKeyRejected(UpstreamCredentialsRejected):
    """The provider refused the customer's own key (BYOK): the customer's to fix, not the
    provider's failure (no breaker, no health average); a 401, which SDKs do not retry."""

    status = 401
    error_type = "byok_key_rejected"
    code = "byok_key_rejected"


class UpstreamBadStream(UpstreamError):
    """The provider's stream could not be read (an event over the size bound)."""

    error_type = "internal_error"


class UpstreamStatus(KrakenError):
    """The provider answered 4xx: relayed with its status and (scrubbed) body, both the
    provider's, so both are the instance's data."""

    error_type = "upstream_status"

    def __init__(self, status: int, body: bytes):
        super().__init__(f"provider returned {status}")
        self.status = status
        self.body = body


def error_body(exc: KrakenError) -> bytes:
    """The OpenAI-style JSON error body for ``exc`` (the transport's and the admin API's too)."""
    return orjson.dumps(
        {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param,
                   "code": exc.code}}
    )
