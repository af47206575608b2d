"""The OpenAI-compatible wire family (OpenAI, Mistral, Groq, DeepSeek, xAI, Gemini's
OpenAI endpoint, vLLM, Ollama, TGI): request shaping, usage extraction, error mapping.
"""
from __future__ import annotations

import re

import orjson

from kraken.config import ProviderConfig
from kraken.errors import BadRequest, KrakenError, UpstreamError, UpstreamStatus
from kraken.providers.usage import Usage

CHAT_PATH = "/chat/completions"
_KEYLIKE = re.compile(rb"(sk-[A-Za-z0-9_\-*]{3,}|AIza[0-9A-Za-z_\-]{10,}|kr_(?:live|test)_[A-Za-z0-9_]+)")


class OpenAICompat:
    """Shapes requests for one configured OpenAI-compatible provider."""

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        self.cfg = cfg
        self.name = cfg.name
        self._chat_target = base_path + CHAT_PATH
        self._models_target = base_path + "/models"
        self._base_headers: list[tuple[bytes, bytes]] = [
            (b"host", authority.encode()),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"user-agent", b"kraken-gateway"),
        ]
        if cfg.api_key:
            self._base_headers.append((b"authorization", b"Bearer " + cfg.api_key.encode()))

    def chat_request(
        self, payload: dict, upstream_model: str
    ) -> tuple[str, list[tuple[bytes, bytes]], bytes, bool]:
        """(target, headers, body, hide_usage) for a chat completion.

        Streams always ask for usage (a stream without it would cost zero); if the client
        did not ask, ``hide_usage`` tells the relay to remove that one event.
        """
        body = dict(payload)
        body["model"] = upstream_model
        hide_usage = False
        if body.get("stream") is True:
            options = body.get("stream_options")
            if options is None:
                options = {}
            elif not isinstance(options, dict):
                raise BadRequest("stream_options must be an object", code="invalid_value")
            if options.get("include_usage") is not True:
                hide_usage = True
                body["stream_options"] = {**options, "include_usage": True}
        data = orjson.dumps(body)
        headers = self._base_headers + [(b"content-length", str(len(data)).encode())]
        return self._chat_target, headers, data, hide_usage

    @staticmethod
    def usage_from_body(body: bytes) -> Usage | None:
        """Usage of a non-streamed response (already complete, bounded in size)."""
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        usage = obj.get("usage") if isinstance(obj, dict) else None
        return Usage.from_openai(usage) if isinstance(usage, dict) else None

    @staticmethod
    def usage_event(event: bytes) -> tuple[Usage, bool] | None:
        """For one SSE event: (usage, usage-only?) if it carries a usage object."""
        start = event.find(b"data:")
        if start < 0:
            return None
        payload = event[start + 5 :].strip()
        if payload == b"[DONE]":
            return None
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        usage = obj.get("usage") if isinstance(obj, dict) else None
        if not isinstance(usage, dict):
            return None
        return Usage.from_openai(usage), obj.get("choices") == []

    def map_error(self, status: int, body: bytes) -> KrakenError:
        """A provider error before the first byte, as the client should see it."""
        if status in (401, 403):
            return UpstreamError(f"provider {self.name} rejected the gateway's credentials")
        if 400 <= status < 500 and status != 429:
            return UpstreamStatus(status, scrub(body, self.cfg.api_key))
        err = UpstreamError(f"provider {self.name} returned {status}")
        if status == 429:
            err.status, err.error_type = 429, "upstream_rate_limited"
        elif status == 504:
            err.status, err.error_type = 504, "upstream_timeout"
        return err


def scrub(body: bytes, secret: str) -> bytes:
    """Remove the provider key and anything key-shaped from a provider error body."""
    if secret:
        body = body.replace(secret.encode(), b"[redacted]")
    return _KEYLIKE.sub(b"[redacted]", body)
