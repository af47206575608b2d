"""``/v1/chat/completions`` answered by a Bedrock provider: the response filters.

The relay taps usage from the provider's own bytes (``bedrock.MetadataTap``, or the body's
``usage``), then feeds them here: a ConverseStream translated message by message as it arrives,
or a whole Converse body held (bounded) and rewritten at the end. Bytes in, bytes out.
"""
from __future__ import annotations

from kraken.errors import KrakenError
from kraken.providers.bedrock import BedrockFamily
from kraken.providers.bedrock_answer import ChunkTranslator, completion_from_converse
from kraken.providers.bedrock_translate import wants_usage_chunk
from kraken.providers.translated_answer import MAX_TRANSLATED_BODY, HeldAnswer, TranslatedStream

__all__ = ["MAX_TRANSLATED_BODY", "ConverseAnswerFilter", "ConverseStreamFilter", "chat_filter"]


def chat_filter(family: BedrockFamily, payload: dict, model: str
                ) -> ConverseStreamFilter | ConverseAnswerFilter:
    """A fresh filter for one attempt: streamed or whole, as the client asked."""
    if payload.get("stream") is True:
        return ConverseStreamFilter(include_usage=wants_usage_chunk(payload), model=model)
    return ConverseAnswerFilter(family, model)


def _refused(exc: KrakenError) -> KrakenError:
    return exc  # BedrockFamily.map_error already speaks OpenAI's shape


class ConverseStreamFilter(TranslatedStream):
    """Event-stream messages in, ``chat.completion.chunk`` events out, as they arrive."""

    __slots__ = ()

    def __init__(self, *, include_usage: bool, model: str):
        super().__init__(ChunkTranslator(include_usage=include_usage, model=model))

    refused = staticmethod(_refused)


class ConverseAnswerFilter(HeldAnswer):
    """A whole Converse answer held (bounded) and rewritten as one ``chat.completion``."""

    __slots__ = ("_family", "_model")

    def __init__(self, family: BedrockFamily, model: str):
        super().__init__()
        self._family = family
        self._model = model

    def rewrite(self, raw: bytes) -> bytes | None:
        return completion_from_converse(raw, self._family.usage_from_body(raw), self._model)

    refused = staticmethod(_refused)
