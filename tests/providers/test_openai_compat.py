"""Request shaping, usage extraction and error mapping for the OpenAI-compatible family."""
from __future__ import annotations

import json

import pytest

from kraken.config import ProviderConfig
from kraken.errors import BadRequest, UpstreamError, UpstreamStatus
from kraken.providers.openai_compat import OpenAICompat, scrub

KEY = "sk-live-abcdefghijklmnopqrstuvwxyz0123"


def family() -> OpenAICompat:
    return OpenAICompat(ProviderConfig(name="p", base_url="https://x/v1", api_key=KEY), "/v1", "x")


def test_stream_forces_usage_and_hides_it_when_not_asked():
    req = family().chat_request({"model": "pub", "stream": True, "messages": []}, "up")
    sent = json.loads(req.body)
    assert req.target == "/v1/chat/completions" and req.method == "POST"
    assert sent["model"] == "up" and sent["stream_options"] == {"include_usage": True}
    assert req.hide_usage
    assert (b"authorization", b"Bearer " + KEY.encode()) in req.headers
    assert (b"content-length", str(len(req.body)).encode()) in req.headers


def test_client_asking_for_usage_sees_it_and_other_options_are_kept():
    req = family().chat_request(
        {"model": "m", "stream": True, "stream_options": {"include_usage": True, "x": 1}}, "m")
    assert not req.hide_usage
    assert json.loads(req.body)["stream_options"] == {"include_usage": True, "x": 1}


def test_non_stream_body_untouched_but_model():
    req = family().chat_request({"model": "m", "n": 2, "tools": []}, "up")
    assert json.loads(req.body) == {"model": "up", "n": 2, "tools": []} and not req.hide_usage


def test_bad_stream_options_is_400():
    with pytest.raises(BadRequest):
        family().chat_request({"model": "m", "stream": True, "stream_options": "yes"}, "m")


def test_usage_event_parsing():
    usage, hidden = OpenAICompat.usage_event(
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,'
        b'"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}}')
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens) == (9, 4, 2, 1)
    assert hidden
    assert OpenAICompat.usage_event(b"data: [DONE]") is None
    assert OpenAICompat.usage_event(b"data: {not json") is None


@pytest.mark.parametrize("status,kind,code", [
    (401, UpstreamError, 502), (403, UpstreamError, 502), (500, UpstreamError, 502),
    (504, UpstreamError, 504), (429, UpstreamError, 429), (400, UpstreamStatus, 400),
    (404, UpstreamStatus, 404), (422, UpstreamStatus, 422)])
def test_error_mapping(status, kind, code):
    err = family().map_error(status, b'{"error":{"message":"m"}}')
    assert isinstance(err, kind) and err.status == code


def test_provider_error_bodies_are_scrubbed_of_keys():
    body = ('{"error":{"message":"Incorrect API key provided: sk-live-abc***0123 or %s, '
            'AIzaSyA1234567890abcdefghijkl, kr_live_abc_def"}}' % KEY).encode()
    err = family().map_error(400, body)
    assert KEY.encode() not in err.body
    for secret in (b"sk-live-abc", b"AIzaSy", b"kr_live_abc"):
        assert secret not in err.body
    assert scrub(b"plain text", "") == b"plain text"
