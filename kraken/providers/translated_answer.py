"""The two response filters of a translated chat answer (``family.ResponseFilter``), whatever
the provider's format: a stream re-said event by event as it arrives, or a whole answer held
(bounded) and rewritten at the end. ``anthropic_chat`` and ``bedrock_chat`` give them their
translator or rewrite; the relay does the writing. Bytes in, bytes out.
"""
from __future__ import annotations

from typing import Protocol

from kraken import metrics
from kraken.errors import KrakenError, UpstreamError
from kraken.providers.error_formats import OPENAI
from kraken.providers.family import Headers, WholeAnswer

MAX_TRANSLATED_BODY = 8 * 1024 * 1024
"""A non-streamed answer is held (up to this bound) to be rewritten as a chat.completion."""
_JSON = (b"content-type", b"application/json")


class ChunkTranslator(Protocol):
    """Provider stream bytes in, ``chat.completion.chunk`` SSE bytes out (one partial event held)."""

    overflowed: bool

    @property
    def done(self) -> bool: ...
    def feed(self, data: bytes) -> bytes: ...
    def finish(self) -> bytes: ...
    def fail(self, exc: KrakenError) -> bytes: ...


class TranslatedStream:
    """Provider events in, ``chat.completion.chunk`` events out, as they arrive."""

    __slots__ = ("_translator",)

    def __init__(self, translator: ChunkTranslator):
        self._translator = translator

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


class HeldAnswer:
    """A whole answer held (bounded) and rewritten as one ``chat.completion`` at the end by
    ``rewrite`` (None: it could not be, and the client gets a 502)."""

    __slots__ = ("_body", "_head", "_overflow")

    def __init__(self) -> None:
        self._body = bytearray()
        self._head: tuple[int, Headers] | None = None
        self._overflow = False

    def rewrite(self, raw: bytes) -> bytes | None:
        raise NotImplementedError

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
        body = None if self._overflow else self.rewrite(bytes(self._body))
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
