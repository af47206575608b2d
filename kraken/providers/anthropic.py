"""The Anthropic wire family: the native ``POST /v1/messages`` relayed as the provider sends it.

A client using the Anthropic SDK with ``base_url`` pointed at Kraken sees Anthropic's own bytes:
the request body changes only in ``model``, the response (JSON or SSE) is never re-encoded, so
thinking blocks keep their signatures and tool-use streams their ``input_json_delta`` pieces.
Kraken's errors are rendered in Anthropic's shape (``{"type":"error","error":{...}}``, the
``ANTHROPIC`` row of ``error_formats``) so the SDK raises its own exception classes.

Usage is Anthropic's, not OpenAI's: ``input_tokens`` excludes cache reads and cache writes, and a
stream splits it over two events (``message_start`` has the input counts, ``message_delta`` the
cumulative output). The parsers return ``kraken.billing.pricing.AnthropicUsage``, whose
``prompt_tokens``/``completion_tokens``/``cached_tokens`` properties give the record's counts
with OpenAI's meaning (prompt = input + cache read + cache write, cached = cache read) and which
``cost_decimal(..., family="anthropic")`` prices with the cache-write rates.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import orjson

from kraken.providers.usage import AnthropicUsage
from kraken.config import ProviderConfig
from kraken.errors import KrakenError, UpstreamOverloaded
from kraken.providers.error_formats import ANTHROPIC, anthropic_error_body
from kraken.providers.family import FamilyBase, UpstreamRequest
from kraken.providers.scrub import provider_error
from kraken.providers.sse_data import event_json
from kraken.providers.wire import base_headers, usage_in_body

__all__ = [
    "DEFAULT_VERSION",
    "MESSAGES_PATH",
    "AnthropicFamily",
    "StreamUsage",
]

MESSAGES_PATH = "/messages"
DEFAULT_VERSION = b"2023-06-01"
"""The only Messages API version Anthropic has published; sent when the client names none."""

_VERSION = re.compile(rb"\d{4}-\d{2}-\d{2}")
# Beta names are lower-case words and dates joined by dashes ("interleaved-thinking-2025-05-14");
# the SDK joins several with "," and HTTP allows spaces around list commas.
_BETA = re.compile(rb"[a-z0-9-]+(?:[ \t]*,[ \t]*[a-z0-9-]+)*")
_MAX_BETA = 1024

class AnthropicFamily(FamilyBase):
    """Shapes requests for one configured Anthropic provider (``kind = "anthropic"``).

    Same method names as ``OpenAICompat`` where the meaning is the same; the stream usage tap
    needs state across events, so it comes from ``usage_parser()`` (one per stream).
    """

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        self.cfg = cfg
        self.name = cfg.name
        self._messages_target = base_path + MESSAGES_PATH
        self._base_headers, self._keyless_headers = base_headers(
            authority, (b"x-api-key", cfg.api_key.encode()) if cfg.api_key else None)

    def headers_for(self, api_key: str | None) -> list[tuple[bytes, bytes]]:
        """The base headers, authorised by the customer's own key (BYOK) when one is given."""
        if api_key is None:
            return self._base_headers
        return self._keyless_headers + [(b"x-api-key", api_key.encode())]

    @staticmethod
    def authorized(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        """Already shaped ``headers`` with the customer's own key (BYOK) as the only credential."""
        return [h for h in headers if h[0] not in (b"x-api-key", b"authorization")] + [
            (b"x-api-key", api_key.encode())]

    # ---- request -------------------------------------------------------------------
    def messages_request(
        self,
        payload: dict,
        upstream_model: str,
        client_headers: Iterable[tuple[bytes, bytes]] = (),
        api_key: str | None = None,
    ) -> UpstreamRequest:
        """One Messages call, read by this family.

        ``client_headers`` are the client's (lower-case name, value) pairs, e.g.
        ``Request.headers``; only ``anthropic-version`` and ``anthropic-beta`` are taken from
        them, and only when well-formed. The client's ``x-api-key``/``authorization`` (its
        Kraken key) is never forwarded: the provider key comes from the config, or is
        ``api_key``, the customer's own (BYOK).
        Nothing is hidden: Anthropic streams always carry usage.
        """
        body = dict(payload)
        body["model"] = upstream_model
        data = orjson.dumps(body)
        version = None
        betas: list[bytes] = []
        for name, value in client_headers:
            if name == b"anthropic-version":
                if version is None:
                    version = value.strip()
            elif name == b"anthropic-beta":
                value = value.strip()
                if value:
                    betas.append(value)
        headers = self.headers_for(api_key) + [
            (b"anthropic-version",
             version if version is not None and _VERSION.fullmatch(version) else DEFAULT_VERSION)]
        if betas:
            beta = b",".join(betas)
            if len(beta) <= _MAX_BETA and _BETA.fullmatch(beta):
                headers.append((b"anthropic-beta", beta))
        headers.append((b"content-length", str(len(data)).encode()))
        return UpstreamRequest(self._messages_target, headers, data, self)

    # ---- usage ---------------------------------------------------------------------
    @staticmethod
    def usage_parser() -> StreamUsage:
        """A fresh stateful usage parser for one stream (pass it to ``SseTap``)."""
        return StreamUsage()

    @staticmethod
    def usage_from_body(body: bytes) -> AnthropicUsage | None:
        """Usage of a non-streamed Message: the whole body, or of a large one only its usage
        member (``kraken.gateway.bodytap``)."""
        return usage_in_body(body, AnthropicUsage.from_anthropic)

    # ---- errors --------------------------------------------------------------------
    def map_error(self, status: int, body: bytes) -> KrakenError:
        """A provider error before the first byte, as the client should see it.

        401/403 are the gateway's credentials (502, body not shown); 429 stays 429 and 529
        (Anthropic overloaded) becomes 503, both ``UpstreamError`` so the pipeline may fall back;
        504 stays 504, other 5xx are 502; any other 4xx is relayed with its status and the
        provider's body, scrubbed of anything key-shaped.
        """
        if status == 529:
            return UpstreamOverloaded(f"provider {self.name} returned {status}")
        return provider_error(self.name, self.cfg.api_key, status, body)

    @staticmethod
    def error_body_for(exc: KrakenError, request_id: str | None = None) -> bytes:
        """Kraken's error ``exc`` as an Anthropic error body (``error_formats``)."""
        return anthropic_error_body(exc, request_id)

    sse_error_event = staticmethod(ANTHROPIC.sse_event)
    """``event: error`` for a stream that fails after its first byte."""


class StreamUsage:
    """The usage of one Messages stream, merged across its events; call it once per event.

    ``message_start`` carries ``message.usage`` (input, cache read/write counts and an initial
    ``output_tokens``); ``message_delta`` carries cumulative counts (always ``output_tokens``,
    and on newer API versions the input counts again). A later count replaces an earlier one,
    a count the later event omits keeps its earlier value, like the SDK's own accumulator.
    Each call returns the usage merged so far, so the tap's last answer is the stream's total.
    One instance per stream: it is not shared and not thread-safe (one task per request).
    """

    __slots__ = ("_merged",)

    def __init__(self) -> None:
        self._merged: dict[str, Any] = {}

    def usage_event(self, event: bytes) -> tuple[AnthropicUsage, bool] | None:
        """For one complete SSE event: (usage so far, False) if it carries usage, else None.

        Never asks to hide the event: Anthropic clients always get usage.
        """
        obj = event_json(event)
        if obj is None:
            return None
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        elif kind == "message_delta":
            usage = obj.get("usage")
        else:
            return None
        if not isinstance(usage, dict):
            return None
        merged = self._merged
        for key, value in usage.items():
            if value is not None:
                merged[key] = value
        return AnthropicUsage.from_anthropic(merged), False

    __call__ = usage_event

    @property
    def usage(self) -> AnthropicUsage | None:
        return AnthropicUsage.from_anthropic(self._merged) if self._merged else None
