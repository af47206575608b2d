"""Bedrock Converse answers re-said as OpenAI Chat Completions answers.

The answer half of ``bedrock_translate``. A Converse response body becomes a
``chat.completion``; a ConverseStream (binary event-stream messages, ``eventstream``) becomes
``chat.completion.chunk`` SSE events as each message completes. Converse has no response id, so
one ``chatcmpl-`` id is made per answer. Its usage counts are disjoint like Anthropic's
(``inputTokens`` excludes cache reads and writes), so they are read into an ``AnthropicUsage``:
the record gets OpenAI's meaning (prompt = all input) and billing the cache-write rates.
Pure code: bytes in, bytes out.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from kraken.errors import (
    KrakenError, UpstreamBadStream, UpstreamFailed, UpstreamOverloaded, UpstreamRateLimited,
    UpstreamTimeout,
)
from kraken.providers.anthropic_answer import openai_usage
from kraken.providers.error_formats import OPENAI
from kraken.providers.eventstream import (
    MAX_MESSAGE, Decoder, EventStreamError, Message, MessageTooLarge,
)
from kraken.providers.usage import AnthropicUsage

__all__ = ["FINISH_REASONS", "ChunkTranslator", "StreamCut", "bedrock_usage",
           "completion_from_converse", "completion_id", "error_event_body", "stream_failure",
           "usage_of_event"]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_MESSAGE_MAX = 512
"""A provider's error message is cut to this many characters before it reaches a client."""
_ERROR_TYPES = {"throttlingException": "rate_limit_exceeded",
                "validationException": "invalid_request_error",
                "serviceUnavailableException": "server_error"}


_FAILURES: dict[str, type[KrakenError]] = {
    "throttlingException": UpstreamRateLimited,
    "serviceUnavailableException": UpstreamOverloaded,
    "modelTimeoutException": UpstreamTimeout,
}
"""A ConverseStream exception event as the error a request record names: the class the same
failure before the first byte maps to (429, 503, 408); any other exception (modelStream,
internalServer, validation...) is the provider failing, ``upstream_error``."""


class StreamCut(UpstreamBadStream):
    """The ConverseStream ended (cleanly, at the HTTP level) before ``messageStop``."""

    error_type = "upstream_error"


def stream_failure(message: Message) -> KrakenError | None:
    """The failure an ``exception`` or ``error`` message of a ConverseStream reports; None for
    an ordinary event. Its type comes from a fixed table: nothing of the provider's text."""
    kind = message.header(":message-type")
    if kind == "exception":
        name = message.header(":exception-type") or "exception"
    elif kind == "error":
        name = message.header(":error-code") or "error"
    else:
        return None
    return _FAILURES.get(name, UpstreamFailed)(f"provider stream failed: {name[:64]}")


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def bedrock_usage(usage: Any) -> AnthropicUsage | None:
    """Converse's ``usage`` ({inputTokens, outputTokens, cacheReadInputTokens,
    cacheWriteInputTokens}) as disjoint counts."""
    if not isinstance(usage, dict):
        return None
    return AnthropicUsage.from_anthropic({
        "input_tokens": usage.get("inputTokens"), "output_tokens": usage.get("outputTokens"),
        "cache_read_input_tokens": usage.get("cacheReadInputTokens"),
        "cache_creation_input_tokens": usage.get("cacheWriteInputTokens")})


def usage_of_event(message: Message) -> AnthropicUsage | None:
    """The usage of a ConverseStream ``metadata`` event; None for any other message."""
    if message.header(":event-type") != "metadata" or message.header(":message-type") != "event":
        return None
    try:
        obj = orjson.loads(message.payload)
    except orjson.JSONDecodeError:
        return None
    return bedrock_usage(obj.get("usage")) if isinstance(obj, dict) else None


def completion_from_converse(body: bytes, usage: AnthropicUsage | None, model: str,
                             created: int | None = None) -> bytes | None:
    """A ``chat.completion`` for a Converse response body (None if it is not one)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    message = obj.get("output", {}).get("message") if isinstance(obj, dict) \
        and isinstance(obj.get("output"), dict) else None
    if not isinstance(message, dict):
        return None
    texts: list[str] = []
    calls: list[dict] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function", "function": {
                "name": use.get("name"),
                "arguments": orjson.dumps(use.get("input") or {}).decode()}})
    out_message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(texts) if texts else None, "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": completion_id(), "object": "chat.completion",
        "created": int(time.time()) if created is None else created, "model": model,
        "choices": [{"index": 0, "message": out_message, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(obj.get("stopReason"), "stop")}],
    }
    shaped = openai_usage(usage)
    if shaped is not None:
        out["usage"] = shaped
    return orjson.dumps(out)


def error_event_body(kind: str, payload: bytes) -> bytes:
    """OpenAI's error object for a Bedrock exception event (``:exception-type`` = ``kind``)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        obj = None
    message = obj.get("message") if isinstance(obj, dict) else None
    if not isinstance(message, str) or not message:
        message = "provider error"
    kind = kind[:64]
    return orjson.dumps({"error": {"message": message[:_MESSAGE_MAX],
                                   "type": _ERROR_TYPES.get(kind, "upstream_error"),
                                   "param": None, "code": kind}})


class ChunkTranslator:
    """ConverseStream bytes in, OpenAI ``chat.completion.chunk`` SSE bytes out.

    Translating until the ``metadata`` event (it follows ``messageStop``; then usage if asked
    and ``[DONE]``), an exception event, a framing fault, or ``fail``; after that (``done``)
    ``feed`` drops what comes. Holds one partial message at most (``eventstream.Decoder``).
    """

    __slots__ = ("_decoder", "_done", "_include_usage", "_prefix", "_stopped", "_tools",
                 "overflowed")

    def __init__(self, *, include_usage: bool, model: str, created: int | None = None,
                 max_message: int = MAX_MESSAGE):
        self._decoder = Decoder(max_message)
        self._done = False
        self._stopped = False
        self._include_usage = include_usage
        created = int(time.time()) if created is None else created
        self._prefix = (b'{"id":"' + completion_id().encode() +
                        b'","object":"chat.completion.chunk","created":%d,"model":' % created
                        + orjson.dumps(model))
        self._tools: dict[object, int] = {}
        """Converse content block index -> OpenAI tool_calls index."""
        self.overflowed = False

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        if self._done:
            return b""
        try:
            messages = self._decoder.feed(data)
        except EventStreamError as exc:
            self.overflowed = isinstance(exc, MessageTooLarge)
            return self.fail(exc)
        return b"".join(self._message(m) for m in messages if not self._done)

    def finish(self) -> bytes:
        """The provider's stream ended: ``[DONE]`` after ``messageStop`` (metadata missing),
        else the answer was cut short, which the client is told."""
        if self._done:
            return b""
        if self._stopped:
            self._done = True
            return b"data: [DONE]\n\n"
        return self.fail(StreamCut("provider stream ended before the end of the answer"))

    def fail(self, exc: KrakenError) -> bytes:
        if self._done:
            return b""
        self._done = True
        return OPENAI.sse_event(exc)

    # ---- one message ---------------------------------------------------------------
    def _message(self, message: Message) -> bytes:
        kind = message.header(":message-type")
        if kind == "exception":
            self._done = True
            return OPENAI.frame(error_event_body(message.header(":exception-type") or "exception",
                                                 message.payload))
        if kind == "error":
            self._done = True
            return OPENAI.frame(error_event_body(message.header(":error-code") or "error",
                                                 orjson.dumps({"message": message.header(
                                                     ":error-message")})))
        try:
            obj = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(obj, dict):
            return b""
        return self._event(message.header(":event-type"), obj, message)

    def _event(self, event: str | None, obj: dict, message: Message) -> bytes:
        if event == "contentBlockDelta":
            delta = obj.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            use = delta.get("toolUse")
            index = self._tools.get(obj.get("contentBlockIndex"))
            if isinstance(use, dict) and index is not None:
                return self._chunk({"tool_calls": [{"index": index, "function": {
                    "arguments": use.get("input") or ""}}]})
            return b""  # reasoningContent, citations: no OpenAI counterpart
        if event == "contentBlockStart":
            use = (obj.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return b""
            index = self._tools[obj.get("contentBlockIndex")] = len(self._tools)
            return self._chunk({"tool_calls": [{"index": index, "id": use.get("toolUseId"),
                                                "type": "function", "function": {
                                                    "name": use.get("name"), "arguments": ""}}]})
        if event == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if event == "messageStop":
            self._stopped = True
            return self._chunk({}, FINISH_REASONS.get(obj.get("stopReason"), "stop"))
        if event == "metadata":
            self._done = True
            usage = openai_usage(usage_of_event(message))
            out = b""
            if self._include_usage and usage is not None:
                out = self._data(b',"choices":[],"usage":' + orjson.dumps(usage) + b"}")
            return out + b"data: [DONE]\n\n"
        return b""  # contentBlockStop and future events

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._data(b',"choices":[' + orjson.dumps(choice) + b"]}")

    def _data(self, rest: bytes) -> bytes:
        return b"data: " + self._prefix + rest + b"\n\n"
