"""``/v1/chat/completions`` answered by a Bedrock provider: the response filters.

The relay taps usage from the provider's own bytes (``bedrock.MetadataTap``, or the body's
``usage``), then feeds them here: a ConverseStream translated message by message as it arrives,
or a whole Converse body held (bounded) and rewritten at the end. Bytes in, bytes out.
"""
from __future__ import annotations

from kraken import metrics
from kraken.errors import KrakenError, UpstreamError
from kraken.providers.bedrock import BedrockFamily
from kraken.providers.bedrock_answer import ChunkTranslator, completion_from_converse
from kraken.providers.bedrock_translate import wants_usage_chunk
from kraken.providers.error_formats import OPENAI
from kraken.providers.family import Headers, WholeAnswer

__all__ = ["MAX_TRANSLATED_BODY", "ConverseAnswerFilter", "ConverseStreamFilter", "chat_filter"]

MAX_TRANSLATED_BODY = 8 * 1024 * 1024
"""A non-streamed Converse answer is held (up to this bound) to be rewritten."""
_JSON = (b"content-type", b"application/json")


def chat_filter(family: BedrockFamily, payload: dict, model: str
                ) -> ConverseStreamFilter | ConverseAnswerFilter:
    """A fresh filter for one attempt: streamed or whole, as the client asked."""
    if payload.get("stream") is True:
        return ConverseStreamFilter(include_usage=wants_usage_chunk(payload), model=model)
    return ConverseAnswerFilter(family, model)


def _refused(exc: KrakenError) -> KrakenError:
    return exc  # BedrockFamily.map_error already speaks OpenAI's shape


class ConverseStreamFilter:
    """Event-stream messages in, ``chat.completion.chunk`` events out, as they arrive."""

    __slots__ = ("_translator",)

    def __init__(self, *, include_usage: bool, model: str):
        self._translator = ChunkTranslator(include_usage=include_usage, model=model)

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

    refused = staticmethod(_refused)


class ConverseAnswerFilter:
    """A whole Converse answer held (bounded) and rewritten as one ``chat.completion``."""

    __slots__ = ("_body", "_family", "_head", "_model", "_overflow")

    def __init__(self, family: BedrockFamily, model: str):
        self._family = family
        self._model = model
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
        body = None if self._overflow else completion_from_converse(
            raw, self._family.usage_from_body(raw), self._model)
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

    refused = staticmethod(_refused)
