"""Claude through Kraken: the native ``POST /v1/messages`` endpoint and its token count.

``/v1/messages`` runs the shared call lifecycle (``kraken.gateway.endpoint``) with Anthropic's
request checks and error format; the provider's answer is relayed byte for byte (the relay only
taps ``message_start``/``message_delta`` for usage). Only routes whose provider speaks Anthropic's format are tried. Every error under
``/v1/messages`` (404 and 405 included) is in Anthropic's shape.

``/v1/messages/count_tokens`` (the SDK's ``messages.count_tokens``) runs the same lifecycle and
is relayed the same way. Anthropic does not bill token counting, so its record carries no
tokens and no cost, but it is a record like any admitted call (task type ``count_tokens``):
it is rate-limited, allow-listed and shows in usage as a request.
"""
from __future__ import annotations

from dataclasses import replace

from kraken.errors import InvalidValue
from kraken.gateway.body import boolean, nonempty_array, with_model
from kraken.gateway.endpoint import Endpoint, Parsed, asked_to_stream, model_not_served
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.error_formats import ANTHROPIC
from kraken.providers.family import UpstreamRequest

__all__ = ["COUNT_TOKENS", "MESSAGES", "PATH"]

PATH = "/v1/messages"
not_served = model_not_served("is not served by an Anthropic provider here")


def parse_messages(raw: bytes) -> dict:
    """The fields Kraken needs from a Messages request; the rest is the provider's to check."""
    payload = parse_count_tokens(raw)
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidValue("max_tokens: Field required (a positive integer)",
                           param="max_tokens")
    boolean(payload, "stream", "stream: must be a boolean")
    return payload


def parse_count_tokens(raw: bytes) -> dict:
    """A token count needs what a message needs, less ``max_tokens`` (and it never streams)."""
    payload = with_model(raw, "model: Field required (a string)")
    nonempty_array(payload, "messages", "messages: must be a non-empty array")
    return payload


def speaks_anthropic(route: Route) -> bool:
    """Whether ``route``'s provider speaks Anthropic's format (``/v1/messages`` tries only these)."""
    return isinstance(route.provider.family.for_model(route.model), AnthropicFamily)


def counts_tokens(route: Route) -> bool:
    """``/v1/messages/count_tokens`` goes to Anthropic's own API only (Vertex AI's count
    endpoint has another shape)."""
    return isinstance(route.provider.family, AnthropicFamily)


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    """The client's body with only ``model`` replaced, and its ``anthropic-version`` and
    ``anthropic-beta`` headers when well-formed."""
    return route.provider.family.for_model(route.model).messages_request(parsed.payload, route.model, parsed.req.headers)


def shape_count_tokens(route: Route, parsed: Parsed) -> UpstreamRequest:
    """A token count goes to the provider's ``/messages/count_tokens``."""
    request = shape(route, parsed)
    return replace(request, target=request.target + "/count_tokens")


def _task(parsed: Parsed) -> str:
    return task_type("messages", parsed.payload)


def _count_tokens_task(parsed: Parsed) -> str:
    return "count_tokens"  # one JSON answer, no model call


MESSAGES = Endpoint(
    path=PATH, route="messages", parse=parse_messages, task=_task, shape=shape,
    errors=ANTHROPIC, stream=asked_to_stream, serves=speaks_anthropic, not_served=not_served,
    request_id_header=b"request-id",  # Anthropic's SDK reads it (its ``_request_id``)
)
COUNT_TOKENS = Endpoint(
    path=PATH + "/count_tokens", route="messages_count_tokens", parse=parse_count_tokens,
    task=_count_tokens_task, shape=shape_count_tokens, errors=ANTHROPIC,
    serves=counts_tokens, not_served=not_served, request_id_header=b"request-id",
)
