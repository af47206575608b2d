"""The OpenAI-compatible wire family (OpenAI, Mistral, Groq, DeepSeek, xAI, Gemini's
OpenAI endpoint, vLLM, Ollama, TGI): request shaping, usage extraction, error mapping.
"""
from __future__ import annotations

import orjson

from kraken.config import ProviderConfig
from kraken.errors import InvalidValue, KrakenError
from kraken.providers.error_formats import OPENAI
from kraken.providers.family import DeferredUsageParser, FamilyBase, Headers, UpstreamRequest
from kraken.providers.body_family import BodyFamily, RerankFamily
from kraken.providers.openai_responses import ResponsesFamily, responses_usage
from kraken.providers.scrub import provider_error, scrub
from kraken.providers.usage import Usage, token_count
from kraken.providers.wire import base_headers, usage_in_body

__all__ = ["OpenAICompat", "openai_usage", "responses_usage", "scrub"]

CHAT_PATH = "/chat/completions"
EMBEDDINGS_PATH = "/embeddings"
RESPONSES_PATH = "/responses"
COMPLETIONS_PATH = "/completions"
MODERATIONS_PATH = "/moderations"
IMAGES_PATH = "/images/generations"
RERANK_PATH = "/rerank"


_INCLUDE_USAGE = {"include_usage": True}
"""``stream_options`` for a stream whose client sent none (never changed: only serialised)."""

COHERE_COMPAT_PATH = "/compatibility/v1"
COHERE_RERANK_PATH = "/v2/rerank"


def rerank_target(kind: str, base_path: str) -> str:
    """``{base}/rerank``; for ``cohere`` its native ``/v2/rerank`` beside the Compatibility API
    the base URL names (that API has no rerank), on the same origin and key."""
    if kind == "cohere":
        return base_path.removesuffix(COHERE_COMPAT_PATH) + COHERE_RERANK_PATH
    return base_path + RERANK_PATH


class OpenAICompat(FamilyBase):
    """Shapes requests for one configured OpenAI-compatible provider."""

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        self.cfg = cfg
        self.name = cfg.name
        self._chat_target = base_path + CHAT_PATH
        self._models_target = base_path + "/models"
        self.embeddings_target = base_path + EMBEDDINGS_PATH
        self.responses_target = base_path + RESPONSES_PATH
        self._responses = ResponsesFamily(self)
        """Reads this provider's Responses API answers (built once, not per call)."""
        self._completions_target = base_path + COMPLETIONS_PATH
        self._moderations_target = base_path + MODERATIONS_PATH
        self._images_target = base_path + IMAGES_PATH
        self._rerank_target = rerank_target(cfg.kind, base_path)
        self._images = BodyFamily(self, responses_usage)
        self._rerank = RerankFamily(self)
        """Read gpt-image's and rerank servers' ``usage`` (``kraken.providers.body_family``)."""
        self.stream_usage = cfg.stream_usage or "include_usage"
        """Preset quirk: "always" providers (Mistral) reject ``stream_options`` but send usage."""
        self._base_headers, self._keyless_headers = base_headers(
            authority, (b"authorization", b"Bearer " + cfg.api_key.encode()) if cfg.api_key else None)
        attribution = [(name, value.encode()) for name, value in (
            (b"http-referer", cfg.referer), (b"x-title", cfg.title)) if value]
        self._base_headers += attribution  # OpenRouter's optional app attribution
        self._keyless_headers = self._keyless_headers + attribution

    def headers_for(self, api_key: str | None) -> list[tuple[bytes, bytes]]:
        """The base headers, authorised by the customer's own key (BYOK) when one is given."""
        if api_key is None:
            return self._base_headers
        return self._keyless_headers + [(b"authorization", b"Bearer " + api_key.encode())]

    @staticmethod
    def authorized(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        """Already shaped ``headers`` with the customer's own key (BYOK) as the only credential."""
        return [h for h in headers if h[0] != b"authorization"] + [
            (b"authorization", b"Bearer " + api_key.encode())]

    def chat_request(self, payload: dict, upstream_model: str,
                     api_key: str | None = None) -> UpstreamRequest:
        """A chat completion, read by this family.

        Streams always ask for usage (a stream without it would cost zero); if the client
        did not ask, ``hide_usage`` tells the relay to remove that one event.
        """
        return self._usage_forced(self._chat_target, payload, upstream_model, api_key)

    def completions_request(self, payload: dict, upstream_model: str,
                            api_key: str | None = None) -> UpstreamRequest:
        """A legacy text completion (``POST /completions``): streams ask for usage as chat's do
        (the usage chunk also has ``"choices": []``, so the same parser reads and hides it)."""
        return self._usage_forced(self._completions_target, payload, upstream_model, api_key)

    def _usage_forced(self, target: str, payload: dict, upstream_model: str,
                      api_key: str | None) -> UpstreamRequest:
        """The client's body with the upstream model and, on a stream, usage asked for;
        ``hide_usage`` when the client had not asked. (Once per request, before the send: the
        usual request, a stream without ``stream_options`` and no customer key, takes the
        fewest steps.)"""
        body = {**payload, "model": upstream_model}
        hide_usage = False
        if payload.get("stream") is True and self.stream_usage == "include_usage":
            options = payload.get("stream_options")
            if options is None:
                hide_usage = True
                body["stream_options"] = _INCLUDE_USAGE  # read only: serialised just below
            elif not isinstance(options, dict):
                raise InvalidValue("stream_options must be an object", param="stream_options")
            elif options.get("include_usage") is not True:
                hide_usage = True
                body["stream_options"] = {**options, "include_usage": True}
        data = orjson.dumps(body)
        headers = self._base_headers if api_key is None else self.headers_for(api_key)
        return UpstreamRequest(target, headers + [(b"content-length", b"%d" % len(data))], data,
                               self, hide_usage)

    @staticmethod
    def usage_from_body(body: bytes) -> Usage | None:
        """Usage of a non-streamed response: the whole body, or of a large one only its usage
        member (``kraken.gateway.bodytap``)."""
        return usage_in_body(body, openai_usage)

    def usage_parser(self):
        """The stream usage parser for ``SseTap`` (stateless here: one event holds all usage);
        the usage object found is converted only when the tap's ``usage`` is read."""
        return _STREAM_USAGE

    sse_error_event = staticmethod(OPENAI.sse_event)
    """``event: error`` for a stream that fails after its first byte (OpenAI's shape)."""

    @staticmethod
    def usage_event(event: bytes) -> tuple[Usage, bool] | None:
        """For one SSE event: (usage, usage-only?) if it carries a usage object."""
        return _STREAM_USAGE(event)

    def embeddings_request(self, payload: dict, upstream_model: str,
                           api_key: str | None = None) -> UpstreamRequest:
        """``POST /embeddings``: the client's body, upstream model."""
        headers, data = self._json_request(payload, upstream_model, api_key)
        return UpstreamRequest(self.embeddings_target, headers, data, self)

    def responses_request(self, payload: dict, upstream_model: str,
                          api_key: str | None = None) -> UpstreamRequest:
        """``POST /responses``, read as the Responses API; usage arrives in
        ``response.completed`` unasked, so nothing is added (nothing to hide)."""
        headers, data = self._json_request(payload, upstream_model, api_key)
        return UpstreamRequest(self.responses_target, headers, data, self._responses)

    def moderations_request(self, payload: dict, upstream_model: str,
                            api_key: str | None = None) -> UpstreamRequest:
        """``POST /moderations``: the answer carries no usage (the record's tokens stay null)."""
        headers, data = self._json_request(payload, upstream_model, api_key)
        return UpstreamRequest(self._moderations_target, headers, data, self)

    def images_request(self, payload: dict, upstream_model: str,
                       api_key: str | None = None) -> UpstreamRequest:
        """``POST /images/generations``; gpt-image models' ``usage`` is read as the Responses
        API's (``input_tokens``/``output_tokens``), DALL-E's answers have none."""
        headers, data = self._json_request(payload, upstream_model, api_key)
        return UpstreamRequest(self._images_target, headers, data, self._images)

    def rerank_request(self, payload: dict, upstream_model: str,
                       api_key: str | None = None) -> UpstreamRequest:
        """``POST /rerank`` (Cohere v2 / Jina / vLLM shape); usage as
        ``kraken.providers.body_family`` reads it."""
        headers, data = self._json_request(payload, upstream_model, api_key)
        return UpstreamRequest(self._rerank_target, headers, data, self._rerank)

    def _json_request(self, payload: dict, upstream_model: str,
                      api_key: str | None = None) -> tuple[Headers, bytes]:
        data = orjson.dumps({**payload, "model": upstream_model})
        return self.headers_for(api_key) + [(b"content-length", str(len(data)).encode())], data

    def map_error(self, status: int, body: bytes) -> KrakenError:
        """A provider error before the first byte, as the client should see it."""
        return provider_error(self.name, self.cfg.api_key, status, body)


def usage_object(event: bytes) -> tuple[dict, bool] | None:
    """For one SSE event: (its usage object, usage-only?) if it carries one, not converted."""
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
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):  # Groq's older streams: usage under "x_groq"
        extra = obj.get("x_groq")
        usage = extra.get("usage") if isinstance(extra, dict) else None
        if not isinstance(usage, dict):
            return None
        return usage, False
    return usage, obj.get("choices") == []


def openai_usage(usage: dict) -> Usage:
    """A Chat Completions/Embeddings usage object in any preset's dialect.

    DeepSeek reports cache reads as ``prompt_cache_hit_tokens`` (its ``prompt_tokens`` is hit +
    miss, so the meaning matches OpenAI's ``prompt_tokens_details.cached_tokens``).
    """
    parsed = Usage.from_openai(usage)
    if parsed.cached_tokens is None:
        hit = token_count(usage.get("prompt_cache_hit_tokens"))
        if hit is not None:
            parsed = Usage(parsed.prompt_tokens, parsed.completion_tokens, hit, parsed.reasoning_tokens)
    return parsed


_STREAM_USAGE = DeferredUsageParser(usage_object, openai_usage)
