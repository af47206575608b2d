"""``POST /v1/chat/completions``: OpenAI's format, to any provider.

An OpenAI-compatible provider gets the client's body with only ``model`` replaced (and usage
asked for on a stream) and its bytes are relayed unchanged. An Anthropic provider gets the
request translated into a Messages request and its answer is re-said as OpenAI's by a response
filter (``kraken.providers.anthropic_chat``; ``anthropic_translate`` says why this path cannot
relay bytes).
"""
from __future__ import annotations

from kraken.gateway import body as body_checks
from kraken.gateway.endpoint import Endpoint, Parsed, asked_to_stream
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.anthropic_chat import chat_filter, chat_request
from kraken.providers import bedrock_chat
from kraken.providers.bedrock import BedrockFamily
from kraken.providers.family import ResponseFilter, UpstreamRequest

__all__ = ["ENDPOINT", "parse", "response_filter", "shape"]


def parse(body: bytes) -> dict:
    """A chat completion's body: the fields Kraken relies on."""
    payload = body_checks.with_model(body)
    body_checks.nonempty_array(payload, "messages", "'messages' must be a non-empty array")
    body_checks.boolean(payload, "stream", "'stream' must be a boolean")
    return payload


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    """The upstream request for one attempt: the route's own format, or translated into a
    Messages request for an Anthropic provider."""
    family = route.provider.family.for_model(route.model)
    if isinstance(family, AnthropicFamily):
        return chat_request(family, parsed.payload, route.model)
    return family.chat_request(parsed.payload, route.model)


def response_filter(route: Route, parsed: Parsed) -> ResponseFilter | None:
    """What re-says an Anthropic or Bedrock provider's answer as OpenAI's; None: bytes
    unchanged."""
    family = route.provider.family.for_model(route.model)
    if isinstance(family, BedrockFamily):
        return bedrock_chat.chat_filter(family, parsed.payload, route.model)
    return chat_filter(family, parsed.payload) if isinstance(family, AnthropicFamily) else None


def _task(parsed: Parsed) -> str:
    return task_type("chat", parsed.payload)


ENDPOINT = Endpoint(
    path="/v1/chat/completions", route="chat_completions", parse=parse, task=_task,
    shape=shape, stream=asked_to_stream, response_filter=response_filter,
)
