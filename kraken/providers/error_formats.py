"""Each wire format's error answer, in one table: OpenAI, OpenAI Responses, Anthropic, Google.

An endpoint names its ``ErrorFormat``; every error answer before the first byte
(``kraken.gateway.answers.send_error``) and every error event after it (a family's
``sse_error_event``) is rendered from that one value, so a format's body, SSE framing,
content type and head are written down once. Errors stay types (``kraken.errors``); only
their rendering differs by format.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import orjson

from kraken.errors import KrakenError, UpstreamStatus, error_body

__all__ = [
    "ANTHROPIC",
    "FORMATS",
    "GOOGLE",
    "OPENAI",
    "OPENAI_RESPONSES",
    "ErrorFormat",
    "anthropic_error_body",
    "anthropic_error_type",
    "google_error_body",
    "google_status",
]

Headers = list[tuple[bytes, bytes]]
_JSON = b"application/json"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "FAILED_PRECONDITION",
    403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 408: "DEADLINE_EXCEEDED",
    409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "NOT_IMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (what api.anthropic.com would send)."""
    kind = _ANTHROPIC_TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return kind


def anthropic_error_body(exc: KrakenError, request_id: str | None = None) -> bytes:
    """The Anthropic-format JSON error body for ``exc``.

    A relayed provider 4xx (``UpstreamStatus``) keeps the provider's own (scrubbed) body when it
    already is an Anthropic error; otherwise the body is built from the status and message.
    """
    if isinstance(exc, UpstreamStatus) and exc.body:
        try:
            obj = orjson.loads(exc.body)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and obj.get("type") == "error" and isinstance(obj.get("error"), dict):
            return exc.body
    body: dict[str, Any] = {
        "type": "error",
        "error": {"type": anthropic_error_type(exc.status), "message": exc.message},
    }
    if request_id is not None:
        body["request_id"] = request_id
    return orjson.dumps(body)


def google_status(status: int) -> str:
    """google.rpc.Code name for an HTTP status (what Google puts in ``error.status``)."""
    return _GOOGLE_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")


def google_error_body(exc: KrakenError) -> bytes:
    return orjson.dumps({"error": {"code": exc.status, "message": exc.message,
                                   "status": google_status(exc.status)}})


def _responses_error_body(exc: KrakenError) -> bytes:
    """The Responses API's ``error`` event payload (its answers use OpenAI's body)."""
    return orjson.dumps({"type": "error", "code": exc.code or exc.error_type,
                         "message": exc.message, "param": exc.param})


def _provider_error(body: bytes) -> tuple[bool, str | None]:
    """Whether a provider's error ``body`` is a JSON ``{"error": {...}}`` object (relayed as
    it is), else the message it carries, if any: Gemini's OpenAI endpoint sends
    ``[{"error": {...}}]``, TGI ``{"error": "..."}``, older vLLM ``{"message": "..."}``, which
    OpenAI's SDKs and other clients cannot read as OpenAI's."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        return True, None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    if not isinstance(obj, dict):
        return False, None
    error = obj.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        message = obj.get("message")
    return False, message if isinstance(message, str) else None


def _event(data: bytes) -> bytes:
    return b"event: error\ndata: " + data + b"\n\n"


def _data_only(data: bytes) -> bytes:
    return b"data: " + data + b"\r\n\r\n"


def _calls(call_headers: Iterable, own: Headers) -> list[tuple[bytes, bytes]]:
    """The call's headers (its ``x-ratelimit-*``, as on a success) that the error does not
    set itself: the error's own say what refused it (a 429's limits, a provider's wait)."""
    names = {name for name, _ in own}
    names.add(b"request-id")  # Anthropic's head names the request itself
    return [h for h in call_headers if h[0] not in names]


def _head_after(content_type: bytes) -> Callable[[KrakenError, bytes, Iterable], Headers]:
    """Content type, the error's own headers, the call's, then ``x-request-id`` (OpenAI's,
    Google's)."""

    def head(exc: KrakenError, request_id: bytes, call_headers: Iterable) -> Headers:
        own = exc.headers
        return [(b"content-type", content_type), *own, *_calls(call_headers, own),
                (b"x-request-id", request_id)]

    return head


def _anthropic_head(exc: KrakenError, request_id: bytes, call_headers: Iterable) -> Headers:
    """Anthropic's SDK reads ``request-id``; the call's rate-limit headers come last."""
    own = exc.headers
    return [(b"content-type", _JSON), (b"x-request-id", request_id), (b"request-id", request_id),
            *own, *_calls(call_headers, own)]


@dataclass(frozen=True, slots=True)
class ErrorFormat:
    """How one wire format says "error": ``render`` builds Kraken's body for an error;
    ``frame`` wraps a body as the stream's error event; ``head`` gives the answer's headers
    (error, request id, the call's headers). ``relays_provider_body``: a provider's own 4xx
    body is answered as it came (Anthropic's ``render`` decides that itself)."""

    name: str
    render: Callable[[KrakenError], bytes]
    frame: Callable[[bytes], bytes]
    head: Callable[[KrakenError, bytes, Iterable], Headers]
    relays_provider_body: bool = True
    event_body: Callable[[KrakenError], bytes] | None = None
    """The stream event's payload when it differs from ``render`` (the Responses API)."""

    def body(self, exc: KrakenError) -> bytes:
        """The whole answer's body for ``exc`` (before the first byte): a provider's own error
        object as it came; any other provider body (an HTML page, Gemini's list) re-said in
        this format, with the provider's message when it has one."""
        if self.relays_provider_body and isinstance(exc, UpstreamStatus) and exc.body:
            as_is, message = _provider_error(exc.body)
            if as_is:
                return exc.body
            if message is not None:
                exc = UpstreamStatus(exc.status, b"")
                exc.message = message
        return self.render(exc)

    def sse_event(self, exc: KrakenError) -> bytes:
        """What a client sees when a stream fails after its first byte."""
        return self.frame((self.event_body or self.render)(exc))


OPENAI = ErrorFormat("openai", error_body, _event, _head_after(_JSON))
OPENAI_RESPONSES = ErrorFormat("openai_responses", error_body, _event, _head_after(_JSON),
                               event_body=_responses_error_body)
ANTHROPIC = ErrorFormat("anthropic", anthropic_error_body, _event, _anthropic_head,
                        relays_provider_body=False)
GOOGLE = ErrorFormat("google", google_error_body, _data_only,
                     _head_after(b"application/json; charset=UTF-8"))

FORMATS = {fmt.name: fmt for fmt in (OPENAI, OPENAI_RESPONSES, ANTHROPIC, GOOGLE)}
"""Every wire format's error rendering, by name."""
