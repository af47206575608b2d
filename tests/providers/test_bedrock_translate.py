"""OpenAI chat requests as Converse requests, the Converse answer as a chat.completion, and the
kind = "bedrock" configuration (region, credentials, what other kinds may not set)."""
from __future__ import annotations

import orjson
import pytest

from kraken.config import ConfigError, from_mapping
from kraken.errors import BadRequest, UnsupportedParameter, UnsupportedValue
from kraken.providers.bedrock_answer import bedrock_usage, completion_from_converse
from kraken.providers.bedrock_translate import chat_to_converse

PNG = "data:image/png;base64,iVBORw0KGgo="
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def test_roles_system_and_images_follow_converse_rules():
    body = chat_to_converse({"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "ok"}]})
    assert body == {"system": [{"text": "rules"}], "messages": [
        {"role": "user", "content": [{"text": "one"}, {"text": "two"}, {"image": {
            "format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
        {"role": "assistant", "content": [{"text": "ok"}]}]}


@pytest.mark.parametrize(("choice", "expected"), [
    (None, {"auto": {}}), ("auto", {"auto": {}}), ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "f"}}, {"tool": {"name": "f"}}),
])
def test_tool_choice(choice, expected):
    payload = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [TOOL]}
    if choice is not None:
        payload["tool_choice"] = choice
    assert chat_to_converse(payload)["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_leaves_tools_out_unless_the_history_uses_them():
    fresh = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [TOOL],
             "tool_choice": "none"}
    assert "toolConfig" not in chat_to_converse(fresh)
    used = dict(fresh, messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "r"}])
    assert chat_to_converse(used)["toolConfig"] == {"tools": [
        {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]}


@pytest.mark.parametrize(("payload", "error", "param"), [
    ({"n": 2}, UnsupportedValue, "n"),
    ({"logit_bias": {"1": 2}, "audio": {}}, UnsupportedParameter, "audio"),
    ({"response_format": {"type": "json_object"}}, UnsupportedValue, "response_format"),
    ({"max_tokens": 0}, BadRequest, "max_tokens"),
    ({"stop": 3}, BadRequest, "stop"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     BadRequest, "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "tool", "content": "r"}]}, BadRequest, "messages[0].tool_call_id"),
])
def test_what_converse_cannot_take_is_a_400_naming_the_field(payload, error, param):
    with pytest.raises(error) as caught:
        chat_to_converse({"model": "m", "messages": [{"role": "user", "content": "x"}], **payload})
    assert caught.value.param == param and caught.value.status == 400


def test_converse_answer_with_text_and_tool_use_is_one_chat_completion():
    body = orjson.dumps({"output": {"message": {"role": "assistant", "content": [
        {"text": "Let me look."},
        {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 10, "outputTokens": 4,
                                            "totalTokens": 14}})
    out = orjson.loads(completion_from_converse(body, bedrock_usage(orjson.loads(body)["usage"]),
                                                "m", created=5))
    assert out["choices"][0] == {"index": 0, "logprobs": None, "finish_reason": "tool_calls",
                                 "message": {"role": "assistant", "content": "Let me look.",
                                             "refusal": None, "tool_calls": [{
                                                 "id": "t1", "type": "function", "function": {
                                                     "name": "f", "arguments": '{"a":1}'}}]}}
    assert out["usage"]["prompt_tokens"] == 10 and out["model"] == "m"
    assert completion_from_converse(b'{"message":"no"}', None, "m") is None


# ---- config ----------------------------------------------------------------------------------
def _provider(env=None, **fields):
    doc = {"providers": {"aws": {"kind": "bedrock", "models": ["m"], **fields}}}
    return from_mapping(doc, "k.toml", env=env or {}).providers[0]


def test_region_sets_the_default_endpoint_and_credentials_come_from_named_variables():
    p = _provider({"K": "AKID", "S": "secret", "AWS_SECRET_ACCESS_KEY": "other"},
                  region="eu-central-1", access_key_id_env="K", secret_access_key_env="S")
    assert p.base_url == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert (p.aws_region, p.aws_access_key_id, p.aws_secret_access_key) == (
        "eu-central-1", "AKID", "secret")
    assert p.api_key_env == "" and "secret" not in repr(p)
    standard = _provider({"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B",
                          "AWS_SESSION_TOKEN": "T"}, region="us-east-1")
    assert (standard.aws_access_key_id, standard.aws_session_token) == ("A", "T")
    missing = _provider({"AWS_ACCESS_KEY_ID": "A"}, region="us-east-1")
    assert missing.api_key_env == "AWS_SECRET_ACCESS_KEY"


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "providers.aws.region is required"),
    ({"region": "Frankfurt"}, "providers.aws.region is required"),
    ({"region": "us-east-1", "api_key": "k"}, "providers.aws.api_key: Bedrock signs"),
    ({"region": "us-east-1", "embeddings": True}, "providers.aws.embeddings is not served"),
    ({"region": "us-east-1", "access_key_id_env": "1BAD"},
     "providers.aws.access_key_id_env must be"),
])
def test_bedrock_config_errors_name_the_key(fields, message):
    with pytest.raises(ConfigError, match="k.toml: " + message.replace(".", r"\.")):
        _provider(**fields)


def test_other_kinds_may_not_set_bedrock_options():
    doc = {"providers": {"o": {"kind": "openai", "access_key_id_env": "K"}}}
    with pytest.raises(ConfigError,
                       match='providers.o.access_key_id_env is only for kind = "bedrock"'):
        from_mapping(doc, "k.toml", env={})
