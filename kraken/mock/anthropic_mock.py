"""A fast, deterministic Anthropic Messages API provider for tests and the bench.

Same design as ``openai_mock``: the shared ``kraken.mock.server`` does the wire work; wire bytes
are built once per response shape and cached (only the message id changes per request). Content is fake ("tok0 tok1 ..."); the prompt
is never echoed. The wire format is api.anthropic.com's: a ``message`` object, or the SSE events
``message_start``, ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``,
``thinking_delta``, ``signature_delta``, ``input_json_delta``), ``content_block_stop``,
``message_delta`` (stop reason, cumulative ``output_tokens``), ``message_stop``; errors are
``{"type":"error","error":{"type":...,"message":...}}``. Requests need ``anthropic-version``
and, when the mock has ``api_key``, that key in ``x-api-key`` (what Kraken sends) or as
``authorization: Bearer`` (what the anthropic SDK 2.x sends), like the real API.

A ``"mock": {...}`` field in a JSON body steers that one request (Kraken forwards bodies):
``chunks`` (text pieces), ``chunk_delay_ms`` (before each ``content_block_delta``),
``first_byte_delay_ms``, ``status`` (answer with this error status, Anthropic error body; 529 is
``overloaded_error``), ``drop_after_chunks`` / ``hang_after_chunks`` (after that many SSE events:
close with a bare FIN / stop sending but keep the socket open; on a non-stream request: close /
hang before answering), ``error_after_chunks`` (after that many events send an ``error`` event,
``overloaded_error``, and end the stream cleanly, as the real API does mid-stream),
``close_before_response``, ``close_after_response`` (the whole answer, then a FIN), ``content``
(exact text, split on character boundaries), ``usage`` (``input_tokens``, ``output_tokens``,
``cache_read_input_tokens``, ``cache_creation_input_tokens``), ``thinking`` (true: a thinking
block with ``thinking_delta``s and a ``signature_delta`` comes first; also on when the request
has ``thinking.type == "enabled"``), ``thinking_content`` (its exact text), ``tools`` (false:
answer text even though the request has tools; otherwise a request with ``tools`` gets a
``tool_use`` block whose input, made to match the tool's ``input_schema``, streams as
``input_json_delta`` pieces).
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any, NamedTuple

import orjson

from kraken.mock.http1 import ParsedRequest
from kraken.mock.openai_mock import default_pieces, fake_value, split_text
from kraken.mock.server import (
    BadRequest,
    MockServer,
    Reply,
    WireCache,
    checked_int,
    load_body,
    mock_status,
    stream_entry,
)

__all__ = ["MessagePlan", "MockAnthropic", "build_message", "build_stream", "error_body",
           "plan_message"]

# Same length as a real id ("msg_" + 24) and as the ids we generate, so cached chunk sizes stay valid.
_ID_PLACEHOLDER = b"msg_" + b"@" * 24
_DELTA = b"event: content_block_delta\n"


# ----------------------------------------------------------------------------- errors


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error envelope; ``error.type`` is what api.anthropic.com sends for the status."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


_OVERLOADED_EVENT = b"event: error\ndata: " + error_body(529, "Overloaded") + b"\n\n"


# ----------------------------------------------------------------------------- response bodies (pure)


class MessagePlan(NamedTuple):
    """Everything that decides a Message's bytes; hashable, so it keys the wire cache."""

    model: str
    stream: bool
    thinking: tuple[str, ...] | None  # thinking pieces; the signature is derived from them
    text: tuple[str, ...] | None  # text pieces
    tool: tuple[str, str, tuple[str, ...]] | None  # (tool_use id, name, input JSON pieces)
    stop_reason: str
    usage: tuple[int, int, int, int]  # input, output, cache_read, cache_creation


def _int(value: Any, name: str, low: int, high: int) -> int:
    return checked_int(value, name, low, high)


def plan_message(req: dict, mock: dict, chunks: int, input_tokens: int) -> MessagePlan:
    """Decide the response for one Messages request (validation errors raise BadRequest)."""
    get = req.get
    model = get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required")
    max_tokens = get("max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    max_tokens = _int(max_tokens, "max_tokens", 1, 1_000_000)
    messages = get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: at least one message is required")
    stream = get("stream") is True
    if mock and "chunks" in mock:
        chunks = _int(mock["chunks"], "mock.chunks", 0, 100_000)

    thinking = None
    requested = get("thinking")
    wants_thinking = isinstance(requested, dict) and requested.get("type") == "enabled"
    if mock.get("thinking", wants_thinking) is True:
        content = mock.get("thinking_content")
        if isinstance(content, str):
            thinking = split_text(content, max(1, chunks))
        else:
            count = max(1, min(chunks, 5))
            thinking = tuple(("think%d" if k == 0 else " think%d") % k for k in range(count))

    tool = None
    if mock.get("tools", True) is not False:
        tool = _tool_use(get("tools"), get("tool_choice"), chunks)

    text = None
    stop = "end_turn"
    if isinstance(mock.get("content"), str):
        text = split_text(mock["content"], chunks)
    elif tool is None:
        if 0 < max_tokens < chunks:
            chunks, stop = max_tokens, "max_tokens"
        text = default_pieces(chunks)
    if tool is not None:
        stop = "tool_use"
    plan = MessagePlan(model, stream, thinking, text, tool, stop, (0, 0, 0, 0))
    return plan._replace(usage=_usage(mock.get("usage"), input_tokens, _rounds(plan)))


def _tool_use(tools: Any, choice: Any, chunks: int) -> tuple[str, str, tuple[str, ...]] | None:
    """The called client tool (``tool_choice`` if it names one, else the first), input pieces."""
    if not isinstance(tools, list):
        return None
    # Client tools have an input_schema; server tools (web_search_...) are run by Anthropic.
    client = [t for t in tools if isinstance(t, dict) and "input_schema" in t]
    if not client:
        return None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "none":
        return None
    chosen = client[0]
    if kind == "tool":
        chosen = next((t for t in client if t.get("name") == choice.get("name")), chosen)
    name = str(chosen.get("name") or "tool")
    value = fake_value(chosen.get("input_schema") or {"type": "object"})
    tool_id = "toolu_mock" + hashlib.sha256(name.encode()).hexdigest()[:20]  # as long as a real id
    return tool_id, name, split_text(orjson.dumps(value).decode(), chunks)


def _rounds(plan: MessagePlan) -> int:
    """Content deltas in the stream of ``plan`` (one per piece)."""
    tool = plan.tool[2] if plan.tool else ()
    return sum(len(p) for p in (plan.thinking or (), plan.text or (), tool))


def _usage(over: Any, input_tokens: int, output: int) -> tuple[int, int, int, int]:
    if not isinstance(over, dict):
        return (input_tokens, output, 0, 0)
    return (over.get("input_tokens", input_tokens), over.get("output_tokens", output),
            over.get("cache_read_input_tokens", 0), over.get("cache_creation_input_tokens", 0))


def usage_dict(u: tuple[int, int, int, int], output: int | None = None) -> dict:
    return {
        "input_tokens": u[0],
        "cache_creation_input_tokens": u[3],
        "cache_read_input_tokens": u[2],
        "cache_creation": {"ephemeral_5m_input_tokens": u[3], "ephemeral_1h_input_tokens": 0},
        "output_tokens": u[1] if output is None else output,
        "service_tier": "standard",
    }


def signature(thinking: tuple[str, ...]) -> str:
    """A deterministic stand-in for the opaque signature: base64, with '+', '/' and '=' likely."""
    digest = hashlib.sha512("".join(thinking).encode()).digest()
    return base64.b64encode(digest + digest[:31]).decode()


def _blocks(plan: MessagePlan) -> list[dict]:
    content: list[dict] = []
    if plan.thinking is not None:
        content.append({"type": "thinking", "thinking": "".join(plan.thinking),
                        "signature": signature(plan.thinking)})
    if plan.text is not None:
        content.append({"type": "text", "text": "".join(plan.text)})
    if plan.tool is not None:
        tool_id, name, pieces = plan.tool
        content.append({"type": "tool_use", "id": tool_id, "name": name,
                        "input": orjson.loads("".join(pieces))})
    return content


def build_message(plan: MessagePlan) -> bytes:
    """A ``message`` object (id = placeholder)."""
    return orjson.dumps({
        "id": _ID_PLACEHOLDER.decode(), "type": "message", "role": "assistant", "model": plan.model,
        "content": _blocks(plan), "stop_reason": plan.stop_reason, "stop_sequence": None,
        "usage": usage_dict(plan.usage),
    })


def _event(name: bytes, obj: dict) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def build_stream(plan: MessagePlan) -> list[bytes]:
    """The SSE events (``event: ...\\ndata: ...\\n\\n``) of a stream, in api.anthropic.com's order:
    message_start, then per block start / deltas / stop (a ping after the first start),
    message_delta, message_stop."""
    events = [_event(b"message_start", {"type": "message_start", "message": {
        "id": _ID_PLACEHOLDER.decode(), "type": "message", "role": "assistant", "model": plan.model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": usage_dict(plan.usage, output=min(1, plan.usage[1]))}})]

    def block(index: int, start: dict, deltas: list[dict]) -> None:
        events.append(_event(b"content_block_start",
                             {"type": "content_block_start", "index": index, "content_block": start}))
        if index == 0:
            events.append(_event(b"ping", {"type": "ping"}))
        for delta in deltas:
            events.append(_event(b"content_block_delta",
                                 {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": index}))

    index = 0
    if plan.thinking is not None:
        block(index, {"type": "thinking", "thinking": "", "signature": ""},
              [{"type": "thinking_delta", "thinking": p} for p in plan.thinking]
              + [{"type": "signature_delta", "signature": signature(plan.thinking)}])
        index += 1
    if plan.text is not None:
        block(index, {"type": "text", "text": ""},
              [{"type": "text_delta", "text": p} for p in plan.text])
        index += 1
    if plan.tool is not None:
        tool_id, name, pieces = plan.tool
        block(index, {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
              [{"type": "input_json_delta", "partial_json": p} for p in pieces])
    events.append(_event(b"message_delta", {
        "type": "message_delta", "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": plan.usage[1]}}))
    events.append(_event(b"message_stop", {"type": "message_stop"}))
    return events


def _build(plan: MessagePlan) -> tuple:
    """A stream's ``stream_entry``, or ``(body,)``; ``_ID_PLACEHOLDER`` marks the id."""
    return stream_entry(build_stream(plan)) if plan.stream else (build_message(plan),)


# ----------------------------------------------------------------------------- server


class MockAnthropic(MockServer):
    """An Anthropic Messages API HTTP/1.1 server on the running event loop.

    ``url`` is the provider base URL for Kraken's config (``.../v1``); ``sdk_url`` is what the
    Anthropic SDK takes as ``base_url`` (it adds ``/v1/messages`` itself).
    ``requests``/``responses`` keep the last ``RECORD_MAX`` exchanges for assertions.
    """

    id_placeholder = _ID_PLACEHOLDER

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunks: int = 20,
                 chunk_delay_ms: float = 0.0, first_byte_delay_ms: float = 0.0,
                 input_tokens: int = 12, api_key: str | None = None):
        super().__init__(host, port, chunks=chunks, chunk_delay_ms=chunk_delay_ms,
                         first_byte_delay_ms=first_byte_delay_ms, api_key=api_key)
        self.input_tokens = input_tokens
        self._key = api_key.encode() if api_key else None
        self._cache = WireCache(_build)

    @property
    def sdk_url(self) -> str:
        return self.origin

    @property
    def url(self) -> str:
        return self.sdk_url + "/v1"

    # -- provider hooks used by MockServer

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return error_body(status, message)

    def _next_id(self) -> bytes:
        self._ids += 1
        return b"msg_%s%016d" % (self._id_prefix, self._ids)

    def _paced(self, reply: Reply, k: int, event: bytes) -> bool:
        return event.startswith(_DELTA)

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        if path.startswith("/v1/"):
            path = path[3:]
        if path not in ("/messages", "/messages/count_tokens"):
            return Reply(404, error_body(404, f"Not found: {req.method} {path[:100]}"))
        if req.method != "POST":
            return Reply(405, error_body(405, f"Method {req.method} not allowed."))
        headers = dict(req.headers)
        if self._key is not None and headers.get(b"x-api-key") != self._key \
                and headers.get(b"authorization") != b"Bearer " + self._key:
            return Reply(401, error_body(401, "invalid x-api-key"))
        if not headers.get(b"anthropic-version"):
            return Reply(400, error_body(400, "anthropic-version: header is required"))
        body, mock = _load(req.body)
        if path == "/messages/count_tokens":
            return Reply(200, orjson.dumps({"input_tokens": self.input_tokens}))
        error = _mock_error(mock)
        if error is not None:
            return self._with_mock(mock, error)
        plan = plan_message(body, mock, self.chunks, self.input_tokens)
        cached = self._cache.get(plan)
        if not plan.stream:
            body = cached[0].replace(_ID_PLACEHOLDER, self._next_id())
            return self._with_mock(mock, Reply(200, body, rounds=_rounds(plan)))
        if mock and mock.get("error_after_chunks") is not None:
            cut = self._opt_int(mock, "error_after_chunks")
            cached = stream_entry(cached[0][:cut] + [_OVERLOADED_EVENT])
        return self._with_mock(mock, Reply(200, events=cached[0], framed=cached[1],
                                          whole=cached[2:]))


_STATUS_MESSAGES = {429: "Number of request tokens has exceeded your per-minute rate limit",
                    500: "Internal server error", 529: "Overloaded"}


def _mock_error(mock: dict) -> Reply | None:
    status = mock_status(mock)
    if status is None:
        return None
    return Reply(status, error_body(status, _STATUS_MESSAGES.get(status, f"Mock error {status}.")))


def _load(raw: bytes) -> tuple[dict, dict]:
    return load_body(raw, "There was an issue with your request body: invalid JSON")
