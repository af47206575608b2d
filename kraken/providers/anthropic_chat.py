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

from kraken import metrics
from kraken.errors import KrakenError, UpstreamError, UpstreamStatus
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.anthropic_answer import (
    ChunkTranslator,
    completion_from_message,
    openai_error_from_anthropic,
)
from kraken.providers.anthropic_translate import chat_to_messages, wants_usage_chunk
from kraken.providers.error_formats import OPENAI
from kraken.providers.family import Headers, UpstreamRequest, WholeAnswer

__all__ = ["MAX_TRANSLATED_BODY", "ChatAnswerFilter", "ChatStreamFilter", "chat_filter",
           "chat_request"]

MAX_TRANSLATED_BODY = 8 * 1024 * 1024
"""A non-streamed Message is held (up to this bound) to be rewritten as a chat.completion."""
_MOCK_KINDS = ("mock_anthropic",)
"""Provider kinds that are Kraken's local mock: the request's ``mock`` steering field is kept."""
_JSON = (b"content-type", b"application/json")


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


class ChatStreamFilter:
    """Anthropic SSE events in, ``chat.completion.chunk`` events out, as they arrive."""

    __slots__ = ("_translator",)

    def __init__(self, *, include_usage: bool):
        self._translator = ChunkTranslator(include_usage=include_usage)

    @staticmethod
    def head(status: int, headers: Headers) -> Headers:
        return headers

    def feed(self, data: bytes) -> bytes:
        translator = self._translator
        was_done = translator.done
        out = translator.feed(data)
        if translator.overflowed and not was_done:
            metrics.TRANSLATION_FAILURES.labels("event_too_large").inc()
        return out

    def end(self) -> bytes:
        return self._translator.finish()

    def failed(self, exc: KrakenError) -> bytes:
        return self._translator.fail(exc)

    refused = staticmethod(refused)


class ChatAnswerFilter:
    """A whole Message held (bounded) and rewritten as one ``chat.completion`` at the end."""

    __slots__ = ("_body", "_family", "_head", "_overflow")

    def __init__(self, family: AnthropicFamily):
        self._family = family
        self._body = bytearray()
        self._head: tuple[int, Headers] | None = None
        self._overflow = False

    def head(self, status: int, headers: Headers) -> None:
        self._head = (status, [(k, v) for k, v in headers if k != b"content-type"])
        return None

    def feed(self, data: bytes) -> bytes:
        if len(self._body) + len(data) <= MAX_TRANSLATED_BODY:
            self._body += data
        else:
            self._overflow = True
        return b""

    def end(self) -> WholeAnswer:
        raw = bytes(self._body)
        body = None if self._overflow else completion_from_message(
            raw, self._family.usage_from_body(raw))
        status, headers = self._head or (200, [])
        if body is None:
            metrics.TRANSLATION_FAILURES.labels(
                "body_too_large" if self._overflow else "untranslatable").inc()
            err = UpstreamError("provider answer could not be translated")
            status, body = err.status, OPENAI.render(err)
        return status, [_JSON, *headers], body

    @staticmethod
    def failed(exc: KrakenError) -> bytes:
        return b""  # a Content-Length answer cannot carry an error: the relay cuts it short

    refused = staticmethod(refused)
