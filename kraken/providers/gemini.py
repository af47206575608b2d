"""The Gemini native wire family: ``generateContent`` / ``streamGenerateContent`` passed through.

The client's body goes upstream unchanged (it names no model: the model is in the path) and
Google's bytes come back unchanged. Google lets callers put the API key in the URL (``?key=``);
Kraken never does: the provider key travels only in the ``x-goog-api-key`` header, so it cannot
end up in an access log, a proxy log or a ``Request`` repr. Errors Kraken itself reports use
Google's shape, ``{"error":{"code":..,"message":..,"status":..}}`` (the ``GOOGLE`` row of
``error_formats``), so Google's SDKs raise their own exceptions.

Usage is ``usageMetadata``: ``promptTokenCount`` already includes ``cachedContentTokenCount``
(OpenAI's convention for cached tokens), while ``candidatesTokenCount`` excludes
``thoughtsTokenCount``; the record's completion count is candidates + thoughts with thoughts as
the reasoning part, so the "openai" pricing family prices both correctly. In a stream every
chunk carries the counts so far; the last one wins.
"""
from __future__ import annotations

import orjson

from kraken.config import ProviderConfig
from kraken.errors import KrakenError
from kraken.providers.error_formats import GOOGLE
from kraken.providers.family import FamilyBase, UpstreamRequest
from kraken.providers.scrub import provider_error
from kraken.providers.stream_failure import ERROR_MARK, sse_failure
from kraken.providers.usage import Usage, token_count as _int
from kraken.providers.wire import base_headers

__all__ = [
    "METHODS",
    "GeminiNative",
    "UsageMetadataTap",
    "gemini_usage",
    "native_base_path",
]

METHODS = ("generateContent", "streamGenerateContent")
OPENAI_SUFFIX = "/openai"

_META_KEY = b'"usageMetadata"'


def native_base_path(base_path: str) -> str:
    """The native API root from the preset's OpenAI-compatible base (``/v1beta/openai``)."""
    return base_path.removesuffix(OPENAI_SUFFIX)


def gemini_usage(meta: dict) -> Usage:
    """``usageMetadata`` as the record's four counts (see the module docstring)."""
    prompt = _int(meta.get("promptTokenCount"))
    tool_prompt = _int(meta.get("toolUsePromptTokenCount"))
    if prompt is not None and tool_prompt:
        prompt += tool_prompt  # billed as input, reported beside the prompt
    candidates = _int(meta.get("candidatesTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    completion = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Usage(prompt, completion, _int(meta.get("cachedContentTokenCount")), thoughts)


def _usage_of(obj: object) -> Usage | None:
    if isinstance(obj, list):  # streamGenerateContent without alt=sse: a JSON array of chunks
        obj = obj[-1] if obj else None
    meta = obj.get("usageMetadata") if isinstance(obj, dict) else None
    return gemini_usage(meta) if isinstance(meta, dict) else None


class UsageMetadataTap:
    """Stream tap for ``alt=sse``: bytes pass through untouched, the last ``usageMetadata`` is kept.

    Only the line holding the newest ``usageMetadata`` is copied (a partial last line is held,
    bounded by ``max_line``); it is parsed once, at the end. Same interface as ``SseTap``,
    ``failure`` included: Google's ``{"error":{...}}`` event mid-stream (``stream_failure``).
    """

    __slots__ = ("_last", "_max", "_tail", "overflowed", "usage", "failure")

    def __init__(self, max_line: int = 1 << 20):
        self._tail = b""
        self._last = b""
        self._max = max_line
        self.overflowed = False
        self.usage: Usage | None = None
        self.failure: KrakenError | None = None

    def feed(self, data: bytes) -> bytes:
        buf = self._tail + data if self._tail else data
        nl = buf.rfind(b"\n")
        if nl < 0:
            complete, tail = b"", buf
        else:
            complete, tail = buf[: nl + 1], buf[nl + 1 :]
        if self.failure is None and complete.find(ERROR_MARK) >= 0:
            self._failed(complete)
        at = complete.rfind(_META_KEY)
        if at >= 0:
            start = complete.rfind(b"\n", 0, at) + 1
            self._last = complete[start : complete.find(b"\n", at)]
        if len(tail) > self._max:  # a line beyond the bound: its usage is lost, not buffered
            self.overflowed = True
            tail = b""
        self._tail = tail
        return data

    def _failed(self, lines: bytes) -> None:
        """Parse only the lines holding ``ERROR_MARK``; keep the first failure one reports."""
        at = lines.find(ERROR_MARK)
        while at >= 0 and self.failure is None:
            end = lines.find(b"\n", at)
            self.failure = sse_failure(lines[lines.rfind(b"\n", 0, at) + 1:end])
            at = lines.find(ERROR_MARK, end)

    def flush(self) -> bytes:
        if self.failure is None and self._tail.find(ERROR_MARK) >= 0:
            self._failed(self._tail + b"\n")
        if _META_KEY in self._tail:
            self._last = self._tail
        self._tail = b""
        line = self._last.strip()
        if line.startswith(b"data:"):
            try:
                self.usage = _usage_of(orjson.loads(line[5:]))
            except orjson.JSONDecodeError:
                self.usage = None
        return b""


class GeminiNative(FamilyBase):
    """Shapes native requests for one configured ``kind = "gemini"`` provider."""

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        self.cfg = cfg
        self.name = cfg.name
        self._models = native_base_path(base_path) + "/models/"
        self._headers, _ = base_headers(
            authority, (b"x-goog-api-key", cfg.api_key.encode()) if cfg.api_key else None)

    @staticmethod
    def authorized(headers: list[tuple[bytes, bytes]], api_key: str) -> list[tuple[bytes, bytes]]:
        """``headers`` with the customer's own key (BYOK) as the only credential."""
        return [h for h in headers if h[0] != b"x-goog-api-key"] + [
            (b"x-goog-api-key", api_key.encode())]

    def request(self, model: str, method: str, body: bytes, *, sse: bool) -> UpstreamRequest:
        """The client's body as is, read by this family; the key only in a header."""
        if method not in METHODS:
            raise ValueError(method)
        target = self._models + model + ":" + method
        if sse:
            target += "?alt=sse"
        return UpstreamRequest(target, self._headers + [(b"content-length", str(len(body)).encode())],
                               body, self)

    # ---- what the relay needs (same names as OpenAICompat) ----------------------------
    usage_key = b"usageMetadata"
    """The usage member the relay looks for at the end of a large non-streamed answer."""

    @staticmethod
    def usage_from_body(body: bytes) -> Usage | None:
        try:
            return _usage_of(orjson.loads(body))
        except orjson.JSONDecodeError:
            return None

    @staticmethod
    def usage_event(event: bytes) -> tuple[Usage, bool] | None:
        """For one SSE event: (usage, False) if it carries ``usageMetadata``; never hidden."""
        start = event.find(b"data:")
        if start < 0:
            return None
        try:
            usage = _usage_of(orjson.loads(event[start + 5 :]))
        except orjson.JSONDecodeError:
            return None
        return (usage, False) if usage is not None else None

    def usage_parser(self):
        return self.usage_event

    @staticmethod
    def stream_tap(strip_usage: bool) -> UsageMetadataTap:
        """The relay's tap for ``alt=sse``: Google's ``usageMetadata`` is not the ``"usage":{``
        key ``SseTap`` looks for, and Gemini never has a usage event to hide."""
        return UsageMetadataTap()

    sse_error_event = staticmethod(GOOGLE.sse_event)
    """A stream failing after its first byte ends with Google's error object as an event."""

    def map_error(self, status: int, body: bytes) -> KrakenError:
        """A provider error before the first byte (the shared rules; Google also reports a bad
        key as 400 ``API_KEY_INVALID``)."""
        return provider_error(self.name, self.cfg.api_key, status, body,
                              credentials_rejected=status == 400 and b"API_KEY_INVALID" in body)
