"""OpenAI's audio endpoints as an OpenAI-compatible provider's requests, and their usage.

- ``/audio/transcriptions`` and ``/audio/translations``: the client's multipart body, relayed
  as it arrives (``kraken.gateway.upload``); the request carries its first bytes. Answers in
  ``json``/``verbose_json`` may carry ``usage``: ``{"type": "tokens", "input_tokens",
  "output_tokens"}`` (gpt-4o-transcribe models) or ``{"type": "duration", "seconds"}``
  (whisper-1). Tokens are recorded as prompt/completion tokens; a duration as prompt "tokens"
  that count whole seconds (rounded up), priced per second (``whisper-1``: $0.006 per minute =
  $100 per million seconds). ``text``/``srt``/``vtt`` answers carry none (null).
- ``/audio/speech``: JSON in, audio bytes out; metered by the ``input``'s length in
  characters, as prompt "tokens" (``tts-1``: $15 per million characters), never its text.
"""
from __future__ import annotations

import math

import orjson

from kraken.errors import KrakenError
from kraken.providers.family import FamilyBase, Headers, UpstreamRequest, WireFamily
from kraken.providers.usage import MAX_COUNT, Usage
from kraken.providers.wire import usage_in_body

__all__ = ["AudioFamily", "SpeechFamily", "audio_usage", "speech_request", "upload_request"]


def audio_usage(usage: dict) -> Usage | None:
    """A transcription's ``usage``: tokens, or a duration as whole seconds."""
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) \
                and 0 <= seconds <= MAX_COUNT:  # a duration is a float: counted up, bounded
            return Usage(prompt_tokens=math.ceil(seconds), completion_tokens=0)
        return None
    return Usage.from_openai({"prompt_tokens": usage.get("input_tokens"),
                              "completion_tokens": usage.get("output_tokens")})


class _Reader(FamilyBase):
    """``base``'s errors and key placement; usage read another way."""

    def __init__(self, base: WireFamily):
        self.base, self.cfg, self.name = base, base.cfg, base.name
        self.authorized = base.authorized

    def usage_parser(self):
        return _no_usage  # never streamed as SSE

    def map_error(self, status: int, body: bytes) -> KrakenError:
        return self.base.map_error(status, body)

    def sse_error_event(self, exc: KrakenError) -> bytes:
        return self.base.sse_error_event(exc)


class AudioFamily(_Reader):
    """Reads a transcription's or translation's answer."""

    @staticmethod
    def usage_from_body(body: bytes) -> Usage | None:
        return usage_in_body(body, audio_usage)


class SpeechFamily(_Reader):
    """Reads a speech answer: audio bytes; the usage is the input's length, known before."""

    def __init__(self, base: WireFamily, characters: int):
        super().__init__(base)
        self._usage = Usage(prompt_tokens=characters, completion_tokens=0)

    def usage_from_body(self, body: bytes) -> Usage:
        return self._usage


def _base_path(family) -> str:
    return family.embeddings_target[: -len("/embeddings")]


def upload_request(family, path: str, first: bytes, framing: Headers) -> UpstreamRequest:
    """``POST {base}{path}`` with the upload's first bytes; ``framing``: its content-type and
    length (or chunked). The rest follows through the connection (``send_more``)."""
    headers = [h for h in family.headers_for(None) if h[0] != b"content-type"] + framing
    return UpstreamRequest(_base_path(family) + path, headers, first, AudioFamily(family))


def speech_request(family, payload: dict, upstream_model: str) -> UpstreamRequest:
    data = orjson.dumps({**payload, "model": upstream_model})
    headers = [h for h in family.headers_for(None) if h[0] != b"accept"] + [
        (b"accept", b"*/*"), (b"content-length", str(len(data)).encode())]
    return UpstreamRequest(_base_path(family) + "/audio/speech", headers, data,
                           SpeechFamily(family, len(payload["input"])))


def _no_usage(event: bytes) -> None:
    return None
