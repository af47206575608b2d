"""Provider presets: base URL, auth header and quirks per kind, checked against recorded-format
payloads from each provider's published API reference."""
from __future__ import annotations

import json

import pytest

from kraken import config
from kraken.config import PROVIDER_PRESETS, ConfigError
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.pool import Origin

KEY = "sk-preset-test-0123456789abcdefghij"
ENV = {"OPENAI_API_KEY": KEY, "MISTRAL_API_KEY": KEY, "GROQ_API_KEY": KEY,
       "DEEPSEEK_API_KEY": KEY, "XAI_API_KEY": KEY, "GEMINI_API_KEY": KEY}

# kind: (host, chat target, sends stream_options, embeddings, responses)
EXPECTED = {
    "openai": ("api.openai.com", "/v1/chat/completions", True, True, True),
    "mistral": ("api.mistral.ai", "/v1/chat/completions", False, True, False),
    "groq": ("api.groq.com", "/openai/v1/chat/completions", True, False, True),
    "deepseek": ("api.deepseek.com", "/v1/chat/completions", True, False, False),
    "xai": ("api.x.ai", "/v1/chat/completions", True, False, True),
    "gemini": ("generativelanguage.googleapis.com", "/v1beta/openai/chat/completions", True, True, False),
}


def provider(kind: str, **extra) -> OpenAICompat:
    cfg = config.from_mapping({"providers": {"p": {"kind": kind, **extra}}}, "<t>", env=ENV)
    p = cfg.providers[0]
    origin = Origin(p.base_url)
    return OpenAICompat(p, origin.base_path, origin.authority)


def header(headers, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_preset_request_building(kind):
    host, target, forces_usage, embeds, responds = EXPECTED[kind]
    fam = provider(kind)
    assert fam.cfg.api_key == KEY, f"{kind} reads its key from the documented environment variable"
    chat = fam.chat_request(
        {"model": "public", "stream": True, "messages": [{"role": "user", "content": "x"}]}, "up")
    got_target, headers, body, hide = chat.target, chat.headers, chat.body, chat.hide_usage
    assert got_target == target
    assert header(headers, b"host") == host.encode()
    assert header(headers, b"authorization") == b"Bearer " + KEY.encode()
    sent = json.loads(body)
    assert sent["model"] == "up"
    assert ("stream_options" in sent) is forces_usage and hide is forces_usage
    assert (fam.cfg.embeddings, fam.cfg.responses) == (embeds, responds)
    emb = fam.embeddings_request({"model": "m", "input": "x"}, "up")
    e_target, e_headers, e_body = emb.target, emb.headers, emb.body
    assert e_target == target.replace("/chat/completions", "/embeddings")
    assert json.loads(e_body) == {"model": "up", "input": "x"}
    assert header(e_headers, b"content-length") == str(len(e_body)).encode()
    resp = fam.responses_request({"model": "m", "input": "x", "stream": True}, "up")
    r_target, r_body = resp.target, resp.body
    assert r_target == target.replace("/chat/completions", "/responses")
    assert json.loads(r_body) == {"model": "up", "input": "x", "stream": True}


def test_every_preset_is_covered_and_valid():
    assert set(PROVIDER_PRESETS) >= set(EXPECTED) | {"openai_compatible", "mock"}
    for kind, preset in PROVIDER_PRESETS.items():
        if "stream_usage" in preset:
            assert preset["stream_usage"] in config.STREAM_USAGE_MODES, kind


def test_mistral_never_gets_stream_options_even_when_client_did_not_ask():
    req = provider("mistral").chat_request(
        {"model": "m", "stream": True, "messages": []}, "mistral-small-latest")
    assert "stream_options" not in json.loads(req.body) and not req.hide_usage


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://ollama.lan:11434/v1",
                                 "https://tgi.internal/v1"])
def test_self_hosted_uses_the_operator_base_url_only(url):
    fam = provider("openai_compatible", base_url=url, api_key="")
    req = fam.chat_request({"model": "m", "messages": []}, "llama")
    assert req.target == Origin(url).base_path + "/chat/completions"
    assert header(req.headers, b"authorization") is None, "no key configured: none sent"


def test_self_hosted_needs_a_base_url():
    with pytest.raises(ConfigError, match="providers.p.base_url"):
        config.from_mapping({"providers": {"p": {"kind": "openai_compatible"}}}, "<t>", env={})


def test_operator_overrides_quirks_per_provider():
    fam = provider("openai_compatible", base_url="http://tgi:80/v1", stream_usage="always",
                   embeddings=False, responses=True)
    req = fam.chat_request({"model": "m", "stream": True, "messages": []}, "m")
    assert "stream_options" not in json.loads(req.body) and not req.hide_usage
    assert not fam.cfg.embeddings and fam.cfg.responses
    assert provider("groq", responses=False).cfg.responses is False


def test_bad_quirk_value_names_the_key():
    with pytest.raises(ConfigError, match="providers.p.stream_usage"):
        config.from_mapping({"providers": {"p": {"kind": "openai", "stream_usage": "sometimes"}}},
                            "<t>", env=ENV)
    with pytest.raises(ConfigError, match="providers.p.embeddings"):
        config.from_mapping({"providers": {"p": {"kind": "openai", "embeddings": "yes"}}},
                            "<t>", env=ENV)


# ---- usage, as each provider sends it -------------------------------------------------------

def event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode()


def counts(u):
    return (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens)


STREAM_USAGE = {
    # OpenAI, with stream_options.include_usage: a last chunk with no choices
    "openai": ({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini", "choices": [], "usage": {
                    "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0,
                                                  "accepted_prediction_tokens": 0,
                                                  "rejected_prediction_tokens": 0}}},
               (1200, 300, 1024, 128), True),
    # Mistral: usage rides on the finishing chunk, unasked
    "mistral": ({"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": "mistral-small-latest", "choices": [
                     {"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 10, "total_tokens": 30, "completion_tokens": 20}},
                (10, 20, None, None), False),
    # Groq without stream_options: usage under x_groq on the finishing chunk
    "groq": ({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
              "model": "llama-3.1-8b-instant", "choices": [
                  {"index": 0, "delta": {}, "finish_reason": "stop"}],
              "x_groq": {"id": "req_1", "usage": {
                  "queue_time": 0.02, "prompt_tokens": 40, "prompt_time": 0.004,
                  "completion_tokens": 12, "completion_time": 0.01, "total_tokens": 52,
                  "total_time": 0.014}}},
             (40, 12, None, None), False),
    # DeepSeek: cache reads as prompt_cache_hit_tokens (prompt_tokens = hit + miss)
    "deepseek": ({"id": "1", "object": "chat.completion.chunk", "created": 1,
                  "model": "deepseek-reasoner", "choices": [], "usage": {
                      "completion_tokens": 90, "prompt_tokens": 64, "prompt_cache_hit_tokens": 48,
                      "prompt_cache_miss_tokens": 16, "total_tokens": 154,
                      "completion_tokens_details": {"reasoning_tokens": 70}}},
                 (64, 90, 48, 70), True),
    # xAI: OpenAI's fields plus text/image token splits and num_sources_used
    "xai": ({"id": "1", "object": "chat.completion.chunk", "created": 1, "model": "grok-4",
             "choices": [], "usage": {
                 "prompt_tokens": 33, "completion_tokens": 5, "total_tokens": 158,
                 "prompt_tokens_details": {"text_tokens": 33, "audio_tokens": 0, "image_tokens": 0,
                                           "cached_tokens": 6},
                 "completion_tokens_details": {"reasoning_tokens": 120, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0},
                 "num_sources_used": 0}},
            (33, 5, 6, 120), True),
    # Gemini's OpenAI-compatible endpoint: plain counts on the finishing chunk
    "gemini": ({"choices": [{"delta": {"content": "", "role": "assistant"},
                             "finish_reason": "stop", "index": 0}],
                "created": 1, "model": "gemini-2.0-flash", "object": "chat.completion.chunk",
                "usage": {"completion_tokens": 9, "prompt_tokens": 4, "total_tokens": 13}},
               (4, 9, None, None), False),
    # vLLM / Ollama with include_usage
    "openai_compatible": ({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                           "model": "llama-3.1-8b", "choices": [], "usage": {
                               "prompt_tokens": 7, "total_tokens": 19, "completion_tokens": 12}},
                          (7, 12, None, None), True),
}


@pytest.mark.parametrize("kind", sorted(STREAM_USAGE))
def test_stream_usage_in_each_providers_shape(kind):
    obj, expected, usage_only = STREAM_USAGE[kind]
    extra = {"base_url": "http://h/v1"} if kind == "openai_compatible" else {}
    fam = provider(kind, **extra)
    found = fam.usage_parser()(event(obj))
    assert found is not None
    usage, hidden = found
    assert counts(usage) == expected
    assert hidden is usage_only, "only a usage-only chunk may be hidden from the client"


def test_non_stream_usage_deepseek_and_embeddings():
    body = json.dumps({"id": "x", "object": "chat.completion", "choices": [], "usage": {
        "prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110,
        "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}}).encode()
    assert counts(OpenAICompat.usage_from_body(body)) == (100, 10, 64, None)
    emb = json.dumps({"object": "list", "data": [], "model": "mistral-embed",
                      "usage": {"prompt_tokens": 8, "total_tokens": 8}}).encode()
    assert counts(OpenAICompat.usage_from_body(emb)) == (8, None, None, None)


def test_openai_cached_field_wins_and_bad_counts_are_ignored():
    both = {"prompt_tokens": 10, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 3}, "prompt_cache_hit_tokens": 9}
    assert counts(OpenAICompat.usage_event(event({"choices": [], "usage": both}))[0]) == (10, 1, 3, None)
    junk = {"prompt_tokens": -1, "completion_tokens": "2", "prompt_cache_hit_tokens": True}
    assert counts(OpenAICompat.usage_event(event({"choices": [], "usage": junk}))[0]) == (
        None, None, None, None)
