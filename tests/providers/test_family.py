"""The provider-family protocol: frozen upstream requests, declared capabilities, and the
OpenAI-over-Anthropic response filter (bytes in, bytes out, no sink)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from kraken.config import ProviderConfig
from kraken.errors import UpstreamStatus
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.anthropic_chat import (
    MAX_TRANSLATED_BODY, ChatAnswerFilter, ChatStreamFilter, chat_filter, chat_request,
)
from kraken.providers.family import FamilyBase, UpstreamRequest
from kraken.providers.gemini import GeminiNative
from kraken.providers.openai_compat import OpenAICompat
from kraken.providers.openai_responses import ResponsesFamily


def cfg(kind: str) -> ProviderConfig:
    return ProviderConfig(name="p", kind=kind, base_url="https://x/v1", api_key="sk-operator-key")


def families():
    oa = OpenAICompat(cfg("openai"), "/v1", "x")
    return [oa, AnthropicFamily(cfg("anthropic"), "/v1", "x"),
            GeminiNative(cfg("gemini"), "/v1beta", "x"), ResponsesFamily(oa)]


def test_an_upstream_request_is_a_frozen_value():
    req = OpenAICompat(cfg("openai"), "/v1", "x").chat_request({"model": "m"}, "up")
    assert isinstance(req, UpstreamRequest) and not hasattr(req, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.target = "/elsewhere"  # type: ignore[misc]


def test_an_upstream_request_is_built_as_the_generated_init_would():
    """Its own __init__ (the slots' setters, faster than the frozen one) takes the same
    arguments, defaults and keywords; replace and equality still work."""
    family = OpenAICompat(cfg("openai"), "/v1", "x")
    req = UpstreamRequest("/t", [(b"a", b"b")], b"{}", family)
    assert (req.target, req.headers, req.body, req.family) == ("/t", [(b"a", b"b")], b"{}", family)
    assert (req.hide_usage, req.method) == (False, "POST")
    named = UpstreamRequest(target="/t", headers=[(b"a", b"b")], body=b"{}", family=family,
                            hide_usage=True, method="GET")
    assert (named.hide_usage, named.method) == (True, "GET")
    assert dataclasses.replace(named, hide_usage=False, method="POST") == req
    assert [f.name for f in dataclasses.fields(req)] == [
        "target", "headers", "body", "family", "hide_usage", "method"]


@pytest.mark.parametrize("family", families(), ids=lambda f: type(f).__name__)
def test_every_family_declares_every_capability(family):
    assert isinstance(family, FamilyBase)
    assert isinstance(family.usage_key, bytes)
    assert family.stream_tap is None or callable(family.stream_tap)
    assert callable(family.authorized), "every family here places a customer's own key"
    for method in ("usage_parser", "usage_from_body", "map_error", "sse_error_event"):
        assert callable(getattr(family, method))


def test_requests_name_the_family_that_reads_the_answer():
    oa, an, gem, _ = families()
    assert oa.chat_request({"model": "m"}, "up").family is oa
    assert oa.embeddings_request({"model": "m"}, "up").family is oa
    assert isinstance(oa.responses_request({"model": "m"}, "up").family, ResponsesFamily)
    assert an.messages_request({"model": "m"}, "up").family is an
    assert gem.request("m", "generateContent", b"{}", sse=False).family is gem


def test_responses_take_a_customer_key_where_the_provider_family_puts_it():
    oa = OpenAICompat(cfg("openai"), "/v1", "x")
    req = oa.responses_request({"model": "m"}, "up")
    mine = req.family.authorized(req.headers, "sk-customer")
    assert [v for k, v in mine if k == b"authorization"] == [b"Bearer sk-customer"]


def test_chat_over_anthropic_is_a_messages_request_read_by_the_anthropic_family():
    an = AnthropicFamily(cfg("anthropic"), "/v1", "x")
    req = chat_request(an, {"model": "pub", "messages": [{"role": "user", "content": "hi"}]},
                       "claude-x")
    assert req.target == "/v1/messages" and req.family is an and not req.hide_usage
    assert json.loads(req.body)["model"] == "claude-x"


def anthropic_stream() -> bytes:
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                                              "usage": {"input_tokens": 3, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 1}},
        {"type": "message_stop"},
    ]
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())
                    for e in events)


def test_stream_filter_passes_the_head_and_translates_events_as_they_arrive():
    filt = chat_filter(AnthropicFamily(cfg("anthropic"), "/v1", "x"),
                       {"stream": True, "messages": []})
    assert isinstance(filt, ChatStreamFilter)
    head = [(b"content-type", b"text/event-stream")]
    assert filt.head(200, head) is head
    raw = anthropic_stream()
    out = b"".join(filt.feed(raw[i:i + 7]) for i in range(0, len(raw), 7)) + filt.end()
    assert b'"content":"Hi"' in out and out.endswith(b"data: [DONE]\n\n")
    assert filt.failed(UpstreamStatus(400, b"")) == b"", "nothing after the end of the answer"


def test_answer_filter_holds_the_head_and_rewrites_the_whole_message():
    filt = chat_filter(AnthropicFamily(cfg("anthropic"), "/v1", "x"), {"messages": []})
    assert isinstance(filt, ChatAnswerFilter)
    assert filt.head(200, [(b"content-type", b"application/json"), (b"x-a", b"1")]) is None
    message = {"type": "message", "id": "msg_1", "model": "claude-x", "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "Hi"}],
               "usage": {"input_tokens": 3, "output_tokens": 1}}
    assert filt.feed(json.dumps(message).encode()) == b""
    status, headers, body = filt.end()
    assert status == 200 and headers == [(b"content-type", b"application/json"), (b"x-a", b"1")]
    completion = json.loads(body)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hi"


def test_answer_filter_over_its_bound_answers_502_in_openai_shape():
    filt = ChatAnswerFilter(AnthropicFamily(cfg("anthropic"), "/v1", "x"))
    filt.head(200, [])
    filt.feed(b"x" * (MAX_TRANSLATED_BODY + 1))
    status, _, body = filt.end()
    assert status == 502 and "error" in json.loads(body)


def test_a_provider_4xx_is_re_said_in_openai_shape():
    err = UpstreamStatus(400, json.dumps({"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens too large"}}).encode())
    said = ChatStreamFilter.refused(err)
    assert said.status == 400
    assert json.loads(said.body) == {"error": {"message": "max_tokens too large",
                                               "type": "invalid_request_error",
                                               "param": None, "code": None}}
