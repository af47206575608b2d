"""The Gemini native family: request shaping, usageMetadata, the stream tap, Google's errors."""
from __future__ import annotations

import json

import pytest

from kraken.config import ProviderConfig
from kraken.errors import (
    BadRequest, RateLimited, Unauthorized, UpstreamCredentialsRejected, UpstreamError,
    UpstreamStatus, UpstreamTimeout,
)
from kraken.providers.error_formats import google_error_body
from kraken.providers.gemini import GeminiNative, UsageMetadataTap, gemini_usage, native_base_path

KEY = "AIzaSyUnitTestKey000000000000000000000"


def family(base_path: str = "/v1beta/openai") -> GeminiNative:
    cfg = ProviderConfig(name="gem", kind="gemini", api_key=KEY,
                         base_url="https://generativelanguage.googleapis.com" + base_path)
    return GeminiNative(cfg, base_path, "generativelanguage.googleapis.com")


def counts(u):
    return (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.reasoning_tokens)


def test_native_path_from_the_presets_openai_base():
    assert native_base_path("/v1beta/openai") == "/v1beta"
    assert native_base_path("/gateway/v1beta") == "/gateway/v1beta"


@pytest.mark.parametrize("method,sse,target", [
    ("generateContent", False, "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("streamGenerateContent", True, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
    ("streamGenerateContent", False, "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
])
def test_request_key_in_header_never_in_url_body_untouched(method, sse, target):
    body = b'{"contents":[{"parts":[{"text":"hi"}]}]}'
    req = family().request("gemini-2.5-flash", method, body, sse=sse)
    got, headers, sent = req.target, req.headers, req.body
    assert got == target and KEY not in got and "key=" not in got
    assert (b"x-goog-api-key", KEY.encode()) in headers
    assert not any(k == b"authorization" for k, _ in headers)
    assert sent is body
    assert (b"content-length", str(len(body)).encode()) in headers


def test_byok_key_replaces_the_operators_in_the_header_only():
    headers = family().request("m", "generateContent", b"{}", sse=False).headers
    mine = GeminiNative.authorized(headers, "AIzaSyCustomerOwnKey")
    assert [v for k, v in mine if k == b"x-goog-api-key"] == [b"AIzaSyCustomerOwnKey"]
    assert len(mine) == len(headers)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError):
        family().request("m", "countTokens", b"{}", sse=False)


# Recorded shape of a thinking model's answer with a cached prefix (Gemini API reference).
META = {"promptTokenCount": 1500, "candidatesTokenCount": 200, "totalTokenCount": 2000,
        "cachedContentTokenCount": 1024, "thoughtsTokenCount": 300,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1500}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1024}]}


def test_usage_metadata_to_record_counts():
    # completion = candidates + thoughts, thoughts are the reasoning part; cached is in prompt
    assert counts(gemini_usage(META)) == (1500, 500, 1024, 300)
    assert counts(gemini_usage({"promptTokenCount": 4, "candidatesTokenCount": 9,
                                "totalTokenCount": 13})) == (4, 9, None, None)
    assert counts(gemini_usage({"promptTokenCount": 10, "toolUsePromptTokenCount": 5})) == (
        15, None, None, None)
    assert counts(gemini_usage({"promptTokenCount": "x", "thoughtsTokenCount": -1})) == (
        None, None, None, None)


def test_usage_from_body_object_array_and_junk():
    answer = json.dumps({"candidates": [], "usageMetadata": META}).encode()
    assert counts(GeminiNative.usage_from_body(answer)) == (1500, 500, 1024, 300)
    array = json.dumps([{"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1}},
                        {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 7}}]).encode()
    assert counts(GeminiNative.usage_from_body(array)) == (3, 7, None, None)
    for junk in (b"", b"[]", b"{not json", b'{"candidates":[]}', b'"x"'):
        assert GeminiNative.usage_from_body(junk) is None


def sse(chunks: list[dict], sep: bytes = b"\r\n\r\n") -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + sep for c in chunks)


STREAM = [{"candidates": [{"content": {"parts": [{"text": f"t{i} "}], "role": "model"}, "index": 0}],
           "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": i + 1,
                             **({"thoughtsTokenCount": 5} if i == 3 else {})},
           "modelVersion": "gemini-2.5-flash"} for i in range(4)]


@pytest.mark.parametrize("step", [1, 3, 7, 64, 100_000])
@pytest.mark.parametrize("sep", [b"\r\n\r\n", b"\n\n"])
def test_tap_passes_every_byte_and_keeps_the_last_usage(step, sep):
    wire = sse(STREAM, sep)
    tap = UsageMetadataTap()
    out = b"".join(tap.feed(wire[i:i + step]) for i in range(0, len(wire), step))
    assert out + tap.flush() == wire
    assert counts(tap.usage) == (8, 4 + 5, None, 5)


def test_tap_last_event_without_trailing_newline_still_counts():
    wire = sse(STREAM)[:-4]
    tap = UsageMetadataTap()
    assert tap.feed(wire) == wire
    tap.flush()
    assert tap.usage.completion_tokens == 9


def test_tap_bounds_what_it_holds():
    tap = UsageMetadataTap(max_line=100)
    blob = b"data: " + b"x" * 500
    assert tap.feed(blob) == blob and tap.overflowed
    tap.flush()
    assert tap.usage is None


def test_tap_ignores_usage_text_inside_content_when_a_real_one_follows():
    chunks = [{"candidates": [{"content": {"parts": [{"text": '"usageMetadata": {"x"'}]}}]},
              STREAM[0]]
    tap = UsageMetadataTap()
    tap.feed(sse(chunks))
    tap.flush()
    assert tap.usage.prompt_tokens == 8


@pytest.mark.parametrize("exc,status,name", [
    (BadRequest("'contents' must be a non-empty array"), 400, "INVALID_ARGUMENT"),
    (Unauthorized("bad key"), 401, "UNAUTHENTICATED"),
    (RateLimited("slow down"), 429, "RESOURCE_EXHAUSTED"),
    (UpstreamError("provider down"), 502, "UNAVAILABLE"),
    (UpstreamTimeout("late"), 504, "DEADLINE_EXCEEDED"),
])
def test_google_error_shape(exc, status, name):
    assert json.loads(google_error_body(exc)) == {
        "error": {"code": status, "message": exc.message, "status": name}}


def test_stream_error_event_is_a_data_line_with_googles_error():
    event = GeminiNative.sse_error_event(UpstreamError("provider connection failed"))
    assert event.startswith(b"data: ") and event.endswith(b"\r\n\r\n")
    assert json.loads(event[6:])["error"]["status"] == "UNAVAILABLE"


def test_provider_errors_map_and_are_scrubbed():
    fam = family()
    leak = json.dumps({"error": {"code": 400, "message": f"bad request with {KEY}",
                                 "status": "INVALID_ARGUMENT"}}).encode()
    err = fam.map_error(400, leak)
    assert isinstance(err, UpstreamStatus) and err.status == 400 and KEY.encode() not in err.body
    invalid_key = json.dumps({"error": {"code": 400, "message": "API key not valid.",
                                        "details": [{"reason": "API_KEY_INVALID"}]}}).encode()
    assert type(fam.map_error(400, invalid_key)) is UpstreamCredentialsRejected, (
        "our key, not the client's fault")
    assert type(fam.map_error(403, b"{}")) is UpstreamCredentialsRejected
    assert fam.map_error(429, b"{}").status == 429
    assert fam.map_error(504, b"{}").error_type == "upstream_timeout"
    assert fam.map_error(500, b"{}").status == 502
