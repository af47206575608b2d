"""Claude through Kraken: the native ``POST /v1/messages`` endpoint and the OpenAI-format bridge.

``/v1/messages`` runs the shared call lifecycle (authenticate → admit → limit → parse → route →
dispatch → relay → record) with Anthropic's request checks and error format; the provider's
answer is relayed byte for byte (the relay only taps ``message_start``/``message_delta`` for
usage). Only routes whose provider speaks Anthropic's format are tried. Every error under
``/v1/messages`` (404 and 405 included) is in Anthropic's shape.

``/v1/messages/count_tokens`` (the SDK's ``messages.count_tokens``) runs the same lifecycle and
is relayed the same way. Anthropic does not bill token counting, so its record carries no
tokens and no cost, but it is a record like any admitted call (task type ``count_tokens``):
it is rate-limited, allow-listed and shows in usage as a request.

``chat_shape`` is how ``/v1/chat/completions`` reaches an Anthropic provider: the request is
translated and ``chat_response_filter`` gives the relay the filter that re-says the answer as
OpenAI's (``kraken.providers.anthropic_chat``; ``anthropic_translate`` says why this path
cannot relay bytes).
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Callable

from kraken.errors import InvalidValue, ModelNotFound
from kraken.gateway.body import boolean, nonempty_array, with_model
from kraken.gateway.call import Call
from kraken.policy.classify import task_type
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.anthropic_chat import chat_filter, chat_request
from kraken.providers.error_formats import ANTHROPIC
from kraken.providers.family import ResponseFilter, UpstreamRequest

if TYPE_CHECKING:
    from kraken.gateway.pipeline import Gateway
    from kraken.policy.router import Route

__all__ = ["chat_response_filter", "chat_shape", "register"]

PATH = "/v1/messages"
COUNT_TOKENS = "count_tokens"


def register(gateway: Gateway) -> None:
    """Serve ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` on ``gateway``;
    anything else under ``/v1/messages`` gets Anthropic's 404 or 405."""
    gateway.add_call(PATH, "messages", partial(_anthropic_call, gateway, parse_messages, ""),
                     ANTHROPIC)
    gateway.add_call(PATH + "/" + COUNT_TOKENS, "messages_count_tokens",
                     partial(_anthropic_call, gateway, parse_count_tokens, "/" + COUNT_TOKENS),
                     ANTHROPIC)
    gateway.add_error_format(PATH, ANTHROPIC)


async def _anthropic_call(gateway: Gateway, parse: Callable[[bytes], dict], suffix: str,
                          call: Call, req: Request, sink: ResponseSink) -> None:
    """A Messages API call relayed to an Anthropic provider, at ``PATH + suffix`` there too."""
    _, payload = await gateway.begin(call, req, parse)
    # Anthropic's SDK reads ``request-id`` (its ``_request_id``); Kraken's id stands in for it.
    call.response_headers = [*call.response_headers, (b"request-id", call.request_id.encode())]
    if suffix:  # a token count: one JSON answer, no model call
        call.task_type = COUNT_TOKENS
    else:
        call.stream = payload.get("stream") is True
        call.task_type = task_type("messages", payload)
    model = payload["model"]
    routes = gateway.routes_for(
        call, model, speaks_anthropic,
        lambda: ModelNotFound(f"The model '{model[:200]}' is not served by an Anthropic "
                              "provider here"))
    headers = req.headers

    def shape(route: Route, body: dict) -> UpstreamRequest:
        request = route.provider.family.messages_request(body, route.model, headers)
        return replace(request, target=request.target + suffix) if suffix else request

    await gateway.dispatch(call, routes, payload, sink, shape)


def parse_messages(raw: bytes) -> dict:
    """The fields Kraken needs from a Messages request; the rest is the provider's to check."""
    payload = parse_count_tokens(raw)
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidValue("max_tokens: Field required (a positive integer)")
    boolean(payload, "stream", "stream: must be a boolean")
    return payload


def parse_count_tokens(raw: bytes) -> dict:
    """A token count needs what a message needs, less ``max_tokens`` (and it never streams)."""
    payload = with_model(raw, "model: Field required (a string)")
    nonempty_array(payload, "messages", "messages: must be a non-empty array")
    return payload


def speaks_anthropic(route: Route) -> bool:
    """Whether ``route``'s provider speaks Anthropic's format (``/v1/messages`` tries only these)."""
    return isinstance(route.provider.family, AnthropicFamily)


# ---- /v1/chat/completions to an Anthropic provider ----------------------------------------------


def chat_shape(route: Route, payload: dict) -> UpstreamRequest:
    """The upstream request for one chat-completions attempt: the route's own format, or
    translated into a Messages request for an Anthropic provider."""
    family = route.provider.family
    if isinstance(family, AnthropicFamily):
        return chat_request(family, payload, route.model)
    return family.chat_request(payload, route.model)


def chat_response_filter(route: Route, payload: dict) -> ResponseFilter | None:
    """What re-says an Anthropic provider's answer as OpenAI's; None: bytes unchanged."""
    family = route.provider.family
    return chat_filter(family, payload) if isinstance(family, AnthropicFamily) else None
