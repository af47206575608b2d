"""OpenAI Chat Completions <-> Anthropic Messages translation, as pure functions on bytes/dicts."""
from __future__ import annotations

import json

import pytest

from kraken.providers.usage import AnthropicUsage
from kraken.errors import BadRequest, UpstreamError, UpstreamStatus
from kraken.mock.anthropic_mock import MessagePlan, build_message, build_stream
from kraken.providers.anthropic_answer import (
    ChunkTranslator,
    completion_from_message,
    openai_error_from_anthropic,
)
from kraken.providers.anthropic_translate import DEFAULT_MAX_TOKENS, chat_to_messages

USER = {"role": "user", "content": "hi"}


def translate(**payload) -> dict:
    payload.setdefault("messages", [USER])
    return chat_to_messages({"model": "public", **payload}, "claude-x")


# ---------------------------------------------------------------- requests


def test_minimal_request_gets_the_default_max_tokens():
    assert translate() == {"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS,
                           "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


def test_system_and_developer_messages_move_to_system_in_order():
    body = translate(messages=[{"role": "system", "content": "A"}, USER,
                               {"role": "developer", "content": [{"type": "text", "text": "B"}]}])
    assert body["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_tool_round_trip_merges_parallel_results_into_one_user_turn():
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": "f", "arguments": json.dumps({"i": i})}} for i in range(2)]
    body = translate(messages=[
        USER,
        {"role": "assistant", "content": "checking", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_0", "content": "zero"},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "one"}]},
        {"role": "user", "content": "thanks"},
    ])
    assistant, results = body["messages"][1:]
    assert assistant == {"role": "assistant", "content": [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "call_0", "name": "f", "input": {"i": 0}},
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"i": 1}}]}
    assert results == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_0", "content": "zero"},
        {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "one"}]},
        {"type": "text", "text": "thanks"}]}


def test_empty_text_is_dropped_not_sent_as_an_empty_block():
    body = translate(messages=[USER, {"role": "assistant", "content": ""}, {"role": "user", "content": "x"}])
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "hi"}, {"type": "text", "text": "x"}]}]


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    (None, None, None),
])
def test_tool_choice_mapping(choice, parallel, expected):
    payload = {"tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        payload["tool_choice"] = choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    body = translate(**payload)
    assert body.get("tool_choice") == expected
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_sampling_stop_user_stream_and_ignored_parameters():
    body = translate(temperature=0.2, top_p=0.9, stop="END", user="u-1", stream=True,
                     max_completion_tokens=77, max_tokens=5, seed=3, presence_penalty=0.1,
                     stream_options={"include_usage": True}, n=1, logprobs=False)
    assert body == {"model": "claude-x", "max_tokens": 77, "temperature": 0.2, "top_p": 0.9,
                    "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}, "stream": True,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


def test_images_and_pdf_documents():
    png = "data:image/png;base64,AAAA"
    body = translate(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "image_url", "image_url": {"url": "http://example.com/a.gif"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]}])
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "http://example.com/a.gif"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBERi0="}}]


@pytest.mark.parametrize("payload, field", [
    ({"n": 3}, "'n'"),
    ({"logprobs": True}, "'logprobs'"),
    ({"response_format": {"type": "json_object"}}, "'response_format'"),
    ({"functions": []}, "'functions'"),
    ({"max_tokens": 0}, "'max_tokens'"),
    ({"stop": [1]}, "'stop'"),
    ({"temperature": "hot"}, "'temperature'"),
    ({"tool_choice": "sometimes"}, "'tool_choice'"),
    ({"tools": [{"type": "web_search"}]}, "'tools[0].type'"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "'messages[0].role'"),
    ({"messages": [{"role": "system", "content": "only"}]}, "'messages'"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "'messages[0].content[0].type'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]},
     "'messages[0].content[0].image_url.url'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]},
     "'messages[0].content[0].image_url.url'"),
    ({"messages": [USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]},
     "'messages[1].tool_calls[0].function.arguments'"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "'messages[0].tool_call_id'"),
])
def test_untranslatable_input_names_the_field(payload, field):
    with pytest.raises(BadRequest) as info:
        translate(**payload)
    assert field in info.value.message and info.value.status == 400


def test_error_messages_never_quote_content():
    secret = "data:image/tiff;base64,SECRETSECRET"
    with pytest.raises(BadRequest) as info:
        translate(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": secret}}]}])
    assert "SECRET" not in info.value.message


def test_passthrough_keeps_only_named_keys():
    payload = {"model": "m", "messages": [USER], "mock": {"chunks": 2}}
    assert chat_to_messages(payload, "c", passthrough=("mock",))["mock"] == {"chunks": 2}
    with pytest.raises(BadRequest):
        chat_to_messages(payload, "c")


# ---------------------------------------------------------------- non-streamed answers


def plan(**kw) -> MessagePlan:
    base = {"model": "claude-x", "stream": False, "thinking": ("hm",), "text": ("Hello", " there"),
            "tool": None, "stop_reason": "end_turn", "usage": (10, 5, 100, 7)}
    return MessagePlan(**{**base, **kw})


def test_message_becomes_chat_completion_without_thinking():
    raw = build_message(plan())
    usage = AnthropicUsage.from_anthropic(json.loads(raw)["usage"])
    out = json.loads(completion_from_message(raw, usage, created=123))
    assert out["object"] == "chat.completion" and out["created"] == 123
    assert out["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hello there", "refusal": None}}]
    assert out["usage"] == {"prompt_tokens": 117, "completion_tokens": 5, "total_tokens": 122,
                            "prompt_tokens_details": {"cached_tokens": 100}}
    assert b"hm" not in completion_from_message(raw, usage)


@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                          ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                          ("refusal", "content_filter"), ("pause_turn", "stop")])
def test_stop_reasons(stop, finish):
    out = json.loads(completion_from_message(build_message(plan(stop_reason=stop)), None))
    assert out["choices"][0]["finish_reason"] == finish and "usage" not in out


def test_tool_use_becomes_tool_calls_with_null_content():
    raw = build_message(plan(thinking=None, text=None, tool=("toolu_1", "f", ('{"a":', "1}")),
                             stop_reason="tool_use"))
    message = json.loads(completion_from_message(raw, None))["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "toolu_1", "type": "function",
                                      "function": {"name": "f", "arguments": '{"a":1}'}}]


def test_not_a_message_is_none():
    assert completion_from_message(b'{"type":"error"}', None) is None
    assert completion_from_message(b"<html>", None) is None


def test_provider_error_body_in_openai_shape():
    exc = UpstreamStatus(400, b"")
    body = b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}'
    assert json.loads(openai_error_from_anthropic(400, body, exc)) == {"error": {
        "message": "max_tokens: too big", "type": "invalid_request_error", "param": None, "code": None}}
    assert json.loads(openai_error_from_anthropic(400, b"nope", exc))["error"]["message"] == (
        "provider returned 400")


# ---------------------------------------------------------------- streams


def stream_bytes(**kw) -> bytes:
    p = plan(stream=True, tool=("toolu_9", "g", ('{"q"', ':"x"}')), stop_reason="tool_use", **kw)
    return b"".join(build_stream(p)).replace(b"@" * 24, b"A" * 24)


def run(data: bytes, cuts, include_usage=False) -> bytes:
    t = ChunkTranslator(include_usage=include_usage, created=1)
    out, last = [], 0
    for cut in [*cuts, len(data)]:
        out.append(t.feed(data[last:cut]))
        last = cut
    out.append(t.finish())
    return b"".join(out)


def chunks(out: bytes) -> list:
    events = out.split(b"\n\n")
    assert events[-1] == b""
    return [json.loads(e[6:]) if e != b"data: [DONE]" else "[DONE]" for e in events[:-1]]


def test_stream_translation_event_by_event():
    got = chunks(run(stream_bytes(), []))
    assert got[-1] == "[DONE]"
    deltas = [c["choices"][0]["delta"] for c in got[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hello there"
    tools = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert tools[0] == {"index": 0, "id": "toolu_9", "type": "function",
                        "function": {"name": "g", "arguments": ""}}
    assert "".join(tc["function"]["arguments"] for tc in tools) == '{"q":"x"}'
    assert got[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert {c["id"] for c in got[:-1]} == {"msg_" + "A" * 24}
    assert {c["model"] for c in got[:-1]} == {"claude-x"}
    assert all(c["object"] == "chat.completion.chunk" and c["created"] == 1 for c in got[:-1])


def test_usage_chunk_only_when_asked():
    got = chunks(run(stream_bytes(), [], include_usage=True))
    assert got[-2]["choices"] == [] and got[-2]["usage"] == {
        "prompt_tokens": 117, "completion_tokens": 5, "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100}}
    assert all("usage" not in c for c in chunks(run(stream_bytes(), []))[:-1])


def test_every_split_point_gives_the_same_output():
    data = stream_bytes()
    whole = run(data, [])
    for cut in range(1, len(data)):
        assert run(data, [cut]) == whole, cut


def test_crlf_framed_events():
    data = stream_bytes()
    assert run(data.replace(b"\n", b"\r\n"), [50, 51]) == run(data, [])


def test_anthropic_error_event_becomes_openai_error_and_stops():
    data = b"".join(build_stream(plan(stream=True))[:4])
    data += b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    out = run(data, [])
    assert out.endswith(b'event: error\ndata: {"error":{"message":"Overloaded","type":"overloaded_error",'
                        b'"param":null,"code":null}}\n\n')
    assert b"[DONE]" not in out


def test_fail_drops_the_partial_event_and_whatever_follows():
    t = ChunkTranslator(include_usage=False)
    data = stream_bytes()
    t.feed(data[:-30])
    event = t.fail(UpstreamError("provider connection failed"))
    assert event == (b'event: error\ndata: {"error":{"message":"provider connection failed",'
                     b'"type":"upstream_error","param":null,"code":null}}\n\n')
    assert t.done and t.feed(data[-30:]) == b"" and t.finish() == b""


def test_nothing_after_message_stop_reaches_the_client():
    t = ChunkTranslator(include_usage=False)
    out = t.feed(stream_bytes())
    assert out.endswith(b"data: [DONE]\n\n")
    assert t.feed(b"event: ping\ndata: {\"type\":\"ping\"}\n\n") == b""
    assert t.fail(UpstreamError("provider connection failed")) == b"", "the answer was complete"


def test_an_oversized_event_is_cut_not_buffered():
    t = ChunkTranslator(include_usage=False, max_event_bytes=1000)
    out = t.feed(b"event: content_block_delta\ndata: {\"x\":\"" + b"a" * 5000)
    assert out.startswith(b"event: error") and t.done
    assert t.feed(b"more" * 1000) == b"" and t.finish() == b""
