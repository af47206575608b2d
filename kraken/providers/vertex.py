"""Vertex AI (``kind = "vertex"``): Gemini and Claude in one Google Cloud project and region.

Only the URL and the credential differ from the families Kraken already has, so each
publisher reuses its own: Claude (``claude-*``) is the Anthropic family at
``.../publishers/anthropic/models/{model}:rawPredict`` (``:streamRawPredict`` for a stream), its
Messages body carrying ``anthropic_version: "vertex-2023-10-16"`` and no ``model`` (the model is
in the path); answers are Anthropic's own bytes, relayed (``/v1/messages``) or translated for
``/v1/chat/completions`` exactly as for ``kind = "anthropic"``. Gemini (every other model) is:

* for Gemini API clients (``/v1beta/models/...``): the Gemini native family at
  ``.../publishers/google/models/{model}:generateContent`` / ``:streamGenerateContent?alt=sse``,
  bodies and bytes unchanged, usage from ``usageMetadata``;
* for OpenAI clients (``/v1/chat/completions``): Vertex's OpenAI-compatible Chat Completions
  endpoint (``.../endpoints/openapi/chat/completions``, model ``google/{model}``; a model that
  already names its publisher, ``meta/...``, is sent as named), as Kraken's ``gemini`` kind uses
  Google's OpenAI endpoint: bytes relayed, usage forced on streams and hidden if unasked.

The credential is an OAuth2 access token of the service account (``google_auth``), added by
each family's ``signed`` hook when the engine sends the request; no API key exists, so there is
no BYOK (a customer's service-account key would need its own token exchange: not offered).
"""
from __future__ import annotations

import logging
import re
from typing import Iterable

import orjson

from kraken.config import ProviderConfig
from kraken.errors import InvalidValue, KrakenError
from kraken.providers.anthropic import _BETA, _MAX_BETA, AnthropicFamily
from kraken.providers.family import FamilyBase, Headers, UpstreamRequest
from kraken.providers.gemini import METHODS, GeminiNative
from kraken.providers.google_auth import TokenSource, load_service_account
from kraken.providers.openai_compat import OpenAICompat
from kraken.providers.wire import base_headers

__all__ = ["ANTHROPIC_VERSION", "VertexAnthropic", "VertexAuth", "VertexFamily", "VertexGemini",
           "publisher_of"]

log = logging.getLogger("kraken")

ANTHROPIC_VERSION = "vertex-2023-10-16"
"""The Messages API version Vertex AI takes, in the body (not a header)."""
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@\-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._@\-]{0,127})?")
"""What may become a path segment (Vertex versions look like ``claude-sonnet-4-5@20250929``)."""


def publisher_of(model: str) -> str:
    """``anthropic`` for Claude models, else ``google``: Vertex's publisher of the model."""
    return "anthropic" if model.startswith("claude-") else "google"


def _checked(model: str, segments: int = 2) -> str:
    """``model`` if it may go where Vertex's URL or body puts it: a ``/`` only where it names
    a publisher (``segments=2``, the OpenAI body), never in a ``models/{model}`` path."""
    if _MODEL.fullmatch(model) is None or model.count("/") >= segments:
        # a client's "provider/model" must not become a path
        raise InvalidValue(f"model {model[:80]!r} is not a Vertex AI model name", param="model")
    return model


class VertexAuth:
    """The provider's service-account token as an ``Authorization`` header, added when sent."""

    __slots__ = ("_header", "_value", "tokens")

    def __init__(self, tokens: TokenSource):
        self.tokens = tokens
        self._value: str | None = None
        self._header: tuple[bytes, bytes] = (b"authorization", b"")

    async def signed(self, headers: Headers) -> Headers:
        """``headers`` with the current access token (an exchange only when it is due)."""
        value = await self.tokens.token()
        if value is not self._value:
            self._value, self._header = value, (b"authorization", b"Bearer " + value.encode())
        return headers + [self._header]

    def rejected(self, status: int) -> None:
        """Vertex refused the token (401): the next request exchanges a new one."""
        if status == 401:
            self.tokens.invalidate()


class VertexAnthropic(AnthropicFamily):
    """Claude on Vertex: Anthropic's family with Vertex's target, body version and token."""

    authorized = None  # no BYOK: the credential is the operator's service account

    def __init__(self, cfg: ProviderConfig, prefix: str, authority: str, auth: VertexAuth):
        super().__init__(cfg, prefix, authority)
        self._models = prefix + "/publishers/anthropic/models/"
        self._auth = auth
        self.signed = auth.signed

    def messages_request(self, payload: dict, upstream_model: str,
                         client_headers: Iterable[tuple[bytes, bytes]] = (),
                         api_key: str | None = None) -> UpstreamRequest:
        """The Messages body without ``model``, with Vertex's ``anthropic_version``; a
        well-formed ``anthropic-beta`` of the client is kept (Vertex honours it)."""
        body = {k: v for k, v in payload.items() if k != "model"}
        body["anthropic_version"] = ANTHROPIC_VERSION
        data = orjson.dumps(body)
        method = ":streamRawPredict" if payload.get("stream") is True else ":rawPredict"
        headers = list(self._base_headers)
        betas = [v.strip() for k, v in client_headers if k == b"anthropic-beta" and v.strip()]
        beta = b",".join(betas)
        if beta and len(beta) <= _MAX_BETA and _BETA.fullmatch(beta):
            headers.append((b"anthropic-beta", beta))
        headers.append((b"content-length", str(len(data)).encode()))
        target = self._models + _checked(upstream_model, 1) + method
        return UpstreamRequest(target, headers, data, self)

    def map_error(self, status: int, body: bytes) -> KrakenError:
        self._auth.rejected(status)
        return super().map_error(status, body)


class _VertexOpenAI(OpenAICompat):
    """Vertex's OpenAI-compatible Chat Completions endpoint (Gemini for OpenAI clients)."""

    authorized = None

    def __init__(self, cfg: ProviderConfig, prefix: str, authority: str, auth: VertexAuth):
        super().__init__(cfg, prefix + "/endpoints/openapi", authority)
        self._auth = auth
        self.signed = auth.signed

    def chat_request(self, payload: dict, upstream_model: str,
                     api_key: str | None = None) -> UpstreamRequest:
        model = _checked(upstream_model)
        return super().chat_request(payload, model if "/" in model else "google/" + model)

    def map_error(self, status: int, body: bytes) -> KrakenError:
        self._auth.rejected(status)
        return super().map_error(status, body)


class VertexGemini(GeminiNative):
    """Gemini on Vertex: native requests at the publisher's path; chat through ``_VertexOpenAI``."""

    authorized = None

    def __init__(self, cfg: ProviderConfig, prefix: str, authority: str, auth: VertexAuth):
        super().__init__(cfg, "", authority)
        self._models = prefix + "/publishers/google/models/"
        self._headers, _ = base_headers(authority, None)
        self._auth = auth
        self.signed = auth.signed
        self._chat = _VertexOpenAI(cfg, prefix, authority, auth)

    def request(self, model: str, method: str, body: bytes, *, sse: bool) -> UpstreamRequest:
        if method not in METHODS:
            raise ValueError(method)
        return super().request(_checked(model, 1), method, body, sse=sse)

    def chat_request(self, payload: dict, upstream_model: str,
                     api_key: str | None = None) -> UpstreamRequest:
        """A chat completion for an OpenAI client, read as OpenAI's (see the module docstring)."""
        return self._chat.chat_request(payload, upstream_model)

    def map_error(self, status: int, body: bytes) -> KrakenError:
        self._auth.rejected(status)
        return super().map_error(status, body)


class VertexFamily(FamilyBase):
    """One configured ``kind = "vertex"`` provider: the publisher's family per model."""

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        self.cfg = cfg
        self.name = cfg.name
        if cfg.credentials_file:
            account, problem = load_service_account(cfg.credentials_file)
        else:
            account, problem = None, ("no service-account key: GOOGLE_APPLICATION_CREDENTIALS "
                                      "is not set and credentials_file is not configured")
        if problem is not None:
            log.warning("provider %s: %s; requests routed to it will fail (503)", cfg.name,
                        problem)
        self.auth = VertexAuth(TokenSource(cfg.name, account, problem))
        prefix = f"{base_path}/v1/projects/{cfg.project}/locations/{cfg.region}"
        self.anthropic = VertexAnthropic(cfg, prefix, authority, self.auth)
        self.gemini = VertexGemini(cfg, prefix, authority, self.auth)

    def for_model(self, model: str) -> VertexAnthropic | VertexGemini:
        """The family of ``model``'s publisher (``publisher_of``)."""
        return self.anthropic if publisher_of(model) == "anthropic" else self.gemini

    def chat_request(self, payload: dict, upstream_model: str,
                     api_key: str | None = None) -> UpstreamRequest:
        """Gemini's chat path (Claude's is translated by the chat endpoint via ``for_model``)."""
        return self.gemini.chat_request(payload, upstream_model)
