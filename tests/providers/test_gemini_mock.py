"""The local Gemini mock speaks Google's wire format (so Kraken's tests mean something)."""
from __future__ import annotations

import json

import pytest
from harness import http

from kraken.mock.gemini_mock import MockGemini

pytestmark = pytest.mark.anyio
KEY = "AIzaSyMockTestKey0000000000000000000000"
BODY = b'{"contents":[{"role":"user","parts":[{"text":"hello"}]}]}'
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"


async def test_generate_content_shape_and_recorded_request_line():
    async with MockGemini(api_key=KEY) as mock:
        reply = await http(mock.port, "POST", GEN, BODY, {"x-goog-api-key": KEY})
        obj = reply.json()
        assert reply.status == 200
        assert obj["candidates"][0]["content"]["role"] == "model"
        assert obj["candidates"][0]["finishReason"] == "STOP"
        assert obj["usageMetadata"] == {
            "promptTokenCount": 12, "candidatesTokenCount": 5, "totalTokenCount": 17,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}]}
        assert obj["modelVersion"] == "gemini-2.5-flash"
        assert mock.requests[-1].request_line == f"POST {GEN}"
        assert reply.body == mock.responses[-1][1]


async def test_sse_stream_uses_crlf_events_with_running_usage():
    async with MockGemini(api_key=KEY) as mock:
        reply = await http(mock.port, "POST", GEN.replace("generateContent", "streamGenerateContent")
                           + "?alt=sse", json.dumps({"contents": [{"parts": [{"text": "x"}]}],
                                                     "mock": {"chunks": 3, "thoughts_tokens": 2}}).encode(),
                           {"x-goog-api-key": KEY})
        assert reply.headers["content-type"] == "text/event-stream"
        events = reply.body.split(b"\r\n\r\n")
        assert events[-1] == b"" and len(events) == 4
        usage = [json.loads(e[6:])["usageMetadata"] for e in events[:-1]]
        assert [u["candidatesTokenCount"] for u in usage] == [1, 2, 3]
        assert "thoughtsTokenCount" not in usage[0] and usage[-1]["thoughtsTokenCount"] == 2


@pytest.mark.parametrize("target,headers,status,name", [
    (GEN, {}, 403, "PERMISSION_DENIED"),
    (GEN, {"x-goog-api-key": "AIzaWrong"}, 400, "INVALID_ARGUMENT"),
    (GEN + "?key=" + KEY, {}, 200, None),
    ("/v1beta/models/m:embedContent", {"x-goog-api-key": KEY}, 404, "NOT_FOUND"),
])
async def test_key_checks_and_errors_like_google(target, headers, status, name):
    async with MockGemini(api_key=KEY) as mock:
        reply = await http(mock.port, "POST", target, BODY, headers)
        assert reply.status == status
        if name:
            assert reply.json()["error"]["status"] == name and reply.json()["error"]["code"] == status


async def test_missing_contents_is_invalid_argument():
    async with MockGemini() as mock:
        reply = await http(mock.port, "POST", GEN, b"{}")
        assert reply.status == 400 and "contents" in reply.json()["error"]["message"]
