"""Errors are types, mapped once to the provider's wire format.

Every failure Kraken reports is a ``KrakenError`` carrying its HTTP status, the OpenAI-style
error ``type``/``code`` and a message that never contains a key, a key hash or content.
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

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return []


class BadRequest(KrakenError):
    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message, code=code)
        self.param = param


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


class UpstreamError(KrakenError):
    """The provider could not be reached or failed before its first byte."""

    status = 502
    error_type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "upstream_timeout"


class UpstreamStatus(KrakenError):
    """The provider answered 4xx: relayed with its status and (scrubbed) body."""

    error_type = "upstream_status"

    def __init__(self, status: int, body: bytes):
        super().__init__(f"provider returned {status}", status=status)
        self.body = body


def error_body(exc: KrakenError) -> bytes:
    """The OpenAI-style JSON error body for ``exc``."""
    return orjson.dumps(
        {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param,
                   "code": exc.code}}
    )


def sse_error_event(exc: KrakenError) -> bytes:
    """What a client sees when a stream fails after its first byte."""
    return b"event: error\ndata: " + error_body(exc) + b"\n\n"
