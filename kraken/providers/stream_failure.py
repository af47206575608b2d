"""A provider's own error event inside a streamed (SSE) answer, as the failure it records.

Providers report a failure after the first byte in the stream itself and then end it cleanly:
Anthropic ``event: error`` with ``{"type":"error","error":{"type":"overloaded_error",...}}``;
OpenAI, vLLM, OpenRouter and Gemini (native or its OpenAI endpoint) a data event holding
``{"error":{...}}`` (older vLLM: ``{"object":"error",...}``); the Responses API ``{"type":
"error","code":...}`` or ``response.failed``. Only those bytes say the answer failed.

Each such event holds the JSON string ``"error"`` as raw bytes (``ERROR_MARK``), which a model's
text never does (a quote inside a JSON string is escaped). That byte test is all a plain read
pays (``kraken.plainchunk``, the SSE taps); only an event holding it is parsed, here.
"""
from __future__ import annotations

from kraken.errors import (
    KrakenError, UpstreamFailed, UpstreamOverloaded, UpstreamRateLimited, UpstreamTimeout,
)
from kraken.plainchunk import ERROR_MARK
from kraken.providers.sse_data import event_json

__all__ = ["ERROR_MARK", "sse_failure"]

_BY_NAME: dict[str, type[KrakenError]] = {
    "overloaded_error": UpstreamOverloaded,  # Anthropic
    "rate_limit_error": UpstreamRateLimited,
    "timeout_error": UpstreamTimeout,
    "rate_limit_exceeded": UpstreamRateLimited,  # OpenAI
    "server_overloaded": UpstreamOverloaded,
    "RESOURCE_EXHAUSTED": UpstreamRateLimited,  # Google
    "UNAVAILABLE": UpstreamOverloaded,
    "DEADLINE_EXCEEDED": UpstreamTimeout,
}
_BY_STATUS: dict[int, type[KrakenError]] = {
    429: UpstreamRateLimited, 503: UpstreamOverloaded, 529: UpstreamOverloaded,
    504: UpstreamTimeout, 408: UpstreamTimeout,
}
"""As the same failure before the first byte maps (429, 529/503, 504); any other is the
provider failing, ``upstream_error``. Only these fixed names reach a message, never the
provider's text."""


def sse_failure(event: bytes) -> KrakenError | None:
    """The failure one complete SSE event (or ``data:`` line) reports; None for any other."""
    obj = event_json(event)
    if obj is None:
        return None
    kind = obj.get("type")
    if kind == "error" or obj.get("object") == "error":
        error = obj.get("error")
        error = error if isinstance(error, dict) else obj  # Responses, old vLLM: at the top
    elif kind == "response.failed":
        response = obj.get("response")
        error = response.get("error") if isinstance(response, dict) else None
        error = error if isinstance(error, dict) else {}
    else:
        error = obj.get("error")
        if not isinstance(error, dict):
            return None
    for key in ("type", "code", "status"):
        value = error.get(key)
        failure = (_BY_NAME.get(value) if type(value) is str
                   else _BY_STATUS.get(value) if type(value) is int else None)
        if failure is not None:
            return failure(f"provider stream failed: {value}")
    return UpstreamFailed("provider stream failed")
