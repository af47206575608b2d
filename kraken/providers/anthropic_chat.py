"""``/v1/chat/completions`` answered by an Anthropic provider: the request translated, the
answer re-said in OpenAI's format by a response filter.

The request half is ``anthropic_translate`` (which says why this path cannot relay bytes), the
answer half ``anthropic_answer``. Here they meet the relay: ``chat_request`` shapes the
``UpstreamRequest`` (read by the Anthropic family itself, so the relay taps Anthropic's usage
from the provider's own bytes), ``chat_filter`` gives the filter the relay feeds those bytes
to: a stream translated event by event as it arrives, or a whole Message held (bounded) and
rewritten at the end. Bytes in, bytes out: the relay does the writing.
"""
from __future__ import annotations

from kraken.errors import KrakenError, UpstreamStatus
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.anthropic_answer import (
    ChunkTranslator,
    completion_from_message,
    openai_error_from_anthropic,
)
from kraken.providers.anthropic_translate import chat_to_messages, wants_usage_chunk
from kraken.providers.family import UpstreamRequest
from kraken.providers.translated_answer import MAX_TRANSLATED_BODY, HeldAnswer, TranslatedStream

__all__ = ["MAX_TRANSLATED_BODY", "ChatAnswerFilter", "ChatStreamFilter", "chat_filter",
           "chat_request"]

_MOCK_KINDS = ("mock_anthropic",)
"""Provider kinds that are Kraken's local mock: the request's ``mock`` steering field is kept."""


def chat_request(family: AnthropicFamily, payload: dict, model: str) -> UpstreamRequest:
    """A chat completion as a Messages request to ``family``'s provider."""
    passthrough = ("mock",) if family.cfg.kind in _MOCK_KINDS else ()
    return family.messages_request(chat_to_messages(payload, model, passthrough=passthrough), model)


def chat_filter(family: AnthropicFamily, payload: dict) -> ChatStreamFilter | ChatAnswerFilter:
    """A fresh filter for one attempt: streamed or whole, as the client asked."""
    if payload.get("stream") is True:
        return ChatStreamFilter(include_usage=wants_usage_chunk(payload))
    return ChatAnswerFilter(family)


def refused(exc: KrakenError) -> KrakenError:
    """The provider's own 4xx, re-said in OpenAI's shape; Kraken's errors are already neutral."""
    if isinstance(exc, UpstreamStatus):
        return UpstreamStatus(exc.status, openai_error_from_anthropic(exc.status, exc.body, exc))
    return exc


class ChatStreamFilter(TranslatedStream):
    """Anthropic SSE events in, ``chat.completion.chunk`` events out, as they arrive."""

    __slots__ = ()

    def __init__(self, *, include_usage: bool):
        super().__init__(ChunkTranslator(include_usage=include_usage))

    refused = staticmethod(refused)


class ChatAnswerFilter(HeldAnswer):
    """A whole Message held (bounded) and rewritten as one ``chat.completion`` at the end."""

    __slots__ = ("_family",)

    def __init__(self, family: AnthropicFamily):
        super().__init__()
        self._family = family

    def rewrite(self, raw: bytes) -> bytes | None:
        return completion_from_message(raw, self._family.usage_from_body(raw))

    refused = staticmethod(refused)
