"""Anthropic Messages answers rewritten as OpenAI Chat Completions answers.

The answer half of the OpenAI-format bridge to Claude (the request half is
``anthropic_translate``, which says why this path re-encodes). A whole ``message`` becomes a
``chat.completion``; a stream is translated event by event by ``ChunkTranslator``, which holds
only the tail of an event not yet complete (bounded by ``MAX_EVENT_BYTES``), so memory stays
flat however long the answer. Thinking blocks have no place in OpenAI's format and are dropped.
Pure code: bytes in, bytes out.
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from kraken.errors import KrakenError, UpstreamBadStream, error_body
from kraken.providers.anthropic import StreamUsage
from kraken.providers.error_formats import OPENAI
from kraken.providers.sse_data import event_json

__all__ = [
    "FINISH_REASONS",
    "MAX_EVENT_BYTES",
    "ChunkTranslator",
    "completion_from_message",
    "openai_error_from_anthropic",
    "openai_usage",
]

MAX_EVENT_BYTES = 1 << 20
"""The longest Anthropic SSE event held while waiting for its end (one delta is a few KB)."""

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def openai_usage(usage: Any) -> dict | None:
    """An ``AnthropicUsage`` in OpenAI's shape (prompt includes cache reads and writes)."""
    if usage is None or usage.prompt_tokens is None:
        return None
    prompt, completion = usage.prompt_tokens, usage.completion_tokens or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens or 0}}


def completion_from_message(body: bytes, usage: Any, created: int | None = None) -> bytes | None:
    """A ``chat.completion`` for a non-streamed Anthropic ``message`` body (None if it is not
    one). ``usage`` is the family's parse of the same body."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict) or msg.get("type") != "message":
        return None
    texts: list[str] = []
    calls: list[dict] = []
    for block in msg.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"),
                "arguments": orjson.dumps(block.get("input") or {}).decode()}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    out = {
        "id": msg.get("id"), "object": "chat.completion",
        "created": int(time.time()) if created is None else created, "model": msg.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(msg.get("stop_reason"), "stop")}],
    }
    shaped = openai_usage(usage)
    if shaped is not None:
        out["usage"] = shaped
    return orjson.dumps(out)


def openai_error_from_anthropic(status: int, body: bytes, exc: KrakenError) -> bytes:
    """A provider 4xx error body (Anthropic's shape) in OpenAI's shape, message kept."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return error_body(exc)
    return orjson.dumps({"error": {"message": err["message"],
                                   "type": err.get("type") or "invalid_request_error",
                                   "param": None, "code": None}})


class ChunkTranslator:
    """Anthropic Messages SSE bytes in, OpenAI ``chat.completion.chunk`` SSE bytes out.

    Translating until ``message_stop`` (then ``[DONE]`` is sent), an ``error`` event, an event
    over the size bound, or ``fail``; after that (``done``) ``feed`` drops what comes. Holds one
    partial event at most.
    """

    __slots__ = (
        "_created",
        "_done",
        "_include_usage",
        "_max",
        "_prefix",
        "_sep",
        "_tail",
        "_tools",
        "_usage",
        "overflowed",
    )

    def __init__(self, *, include_usage: bool, created: int | None = None,
                 max_event_bytes: int = MAX_EVENT_BYTES):
        self._tail = b""
        self._sep = b"\n\n"
        self._done = False
        self._usage = StreamUsage()
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._prefix = b""
        self._tools: dict[int, int] = {}
        """Anthropic content block index -> OpenAI tool_calls index."""
        self._max = max_event_bytes
        self.overflowed = False
        """Set once when an event outgrew ``max_event_bytes`` (the stream was then failed)."""

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, data: bytes) -> bytes:
        """The OpenAI bytes for the next provider bytes (complete events only)."""
        if self._done:
            return b""
        buf = self._tail + data if self._tail else data
        # find, not `in`: bytes.__contains__ formats a TypeError it clears (3.11), per read
        if self._sep == b"\n\n" and buf.find(b"\r\n\r\n") >= 0:
            self._sep = b"\r\n\r\n"
        events = buf.split(self._sep)
        self._tail = events.pop()
        if len(self._tail) > self._max:
            self.overflowed = True
            return b"".join(self._event(e) for e in events) + self.fail(
                UpstreamBadStream("provider sent an oversized stream event"))
        return b"".join(self._event(e) for e in events if e and not self._done)

    def finish(self) -> bytes:
        """At the end of the provider's stream: a last event without its blank line."""
        tail, self._tail = self._tail, b""
        if self._done or not tail.strip():
            return b""
        return self._event(tail)

    def fail(self, exc: KrakenError) -> bytes:
        """The stream broke (provider gone, timeout): drop the partial event, say why (once:
        nothing after the end of the answer or an error already sent)."""
        self._tail = b""
        if self._done:
            return b""
        self._done = True
        return OPENAI.sse_event(exc)

    # ---- one event ---------------------------------------------------------------------------
    def _event(self, raw: bytes) -> bytes:
        obj = event_json(raw)
        if obj is None:
            return b""
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta":
                index = self._tools.get(obj.get("index"))
                if index is None:
                    return b""
                return self._chunk({"tool_calls": [{"index": index, "function": {
                    "arguments": delta.get("partial_json", "")}}]})
            return b""  # thinking_delta, signature_delta, citations: no OpenAI counterpart
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[obj.get("index")] = len(self._tools)
                return self._chunk({"tool_calls": [{"index": index, "id": block.get("id"),
                                                    "type": "function", "function": {
                                                        "name": block.get("name"),
                                                        "arguments": ""}}]})
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "message_start":
            self._usage(raw)
            message = obj.get("message") or {}
            self._prefix = (b'{"id":' + orjson.dumps(message.get("id")) +
                            b',"object":"chat.completion.chunk","created":%d,"model":' % self._created
                            + orjson.dumps(message.get("model")))
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "message_delta":
            self._usage(raw)
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason is None:
                return b""
            return self._chunk({}, FINISH_REASONS.get(reason, "stop"))
        if kind == "message_stop":
            self._done = True
            out = b""
            usage = openai_usage(self._usage.usage)
            if self._include_usage and usage is not None:
                out = self._data(b',"choices":[],"usage":' + orjson.dumps(usage) + b"}")
            return out + b"data: [DONE]\n\n"
        if kind == "error":
            self._done = True
            err = obj.get("error") or {}
            body = {"error": {"message": err.get("message") or "provider error",
                              "type": err.get("type") or "api_error", "param": None, "code": None}}
            return OPENAI.frame(orjson.dumps(body))
        return b""  # ping and future event types

    def _chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._data(b',"choices":[' + orjson.dumps(choice) + b"]}")

    def _data(self, rest: bytes) -> bytes:
        prefix = self._prefix or b'{"id":null,"object":"chat.completion.chunk","created":%d,' \
                                 b'"model":null' % self._created
        return b"data: " + prefix + rest + b"\n\n"
