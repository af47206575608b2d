"""``POST /v1/audio/speech``: JSON in, the provider's audio bytes out as they arrive.

The answer (mp3, opus, aac, flac, wav or pcm) is relayed unchanged, chunk by chunk, under the
provider's Content-Type. The record counts the ``input``'s characters as its prompt units
(priced per character where known, e.g. ``tts-1``); the text itself is never kept. Served by
OpenAI-compatible providers (kinds ``openai``, ``openai_compatible``). Task type ``other``.
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import with_model
from kraken.gateway.endpoint import Endpoint, Parsed, model_not_served
from kraken.gateway.endpoints.audio import hears
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest
from kraken.providers.openai_audio import speech_request

PATH = "/v1/audio/speech"


def parse(body: bytes) -> dict:
    payload = with_model(body)
    text = payload.get("input")
    if not isinstance(text, str) or not text:
        raise InvalidValue("'input' is required and must be a non-empty string", param="input")
    if not isinstance(payload.get("voice"), str):
        raise InvalidValue("'voice' is required and must be a string", param="voice")
    return payload


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    return speech_request(route.provider.family, parsed.payload, route.model)


def _task(parsed: Parsed) -> str:
    return "other"


ENDPOINT = Endpoint(path=PATH, route="audio_speech", parse=parse, task=_task, shape=shape,
                    serves=hears, not_served=model_not_served("does not serve audio here"))
