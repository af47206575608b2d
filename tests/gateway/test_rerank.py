"""POST /v1/rerank (Cohere/Jina shape) through Kraken over raw HTTP (the openai SDK has no
rerank call): the mock in Jina's/vLLM's and Cohere v2's wire formats, one record per call."""
from __future__ import annotations

import json

import pytest
from harness import (
    PROMPT_CANARY,
    PROVIDER_KEY,
    auth_headers,
    http,
    kraken_mapping,
    running_kraken,
    running_mock,
    wait_rows,
)

pytestmark = pytest.mark.anyio
MODEL = "jina-reranker-v2-base-multilingual"


def doc(tmp_path, mock, **provider):
    d = kraken_mapping(tmp_path, mock.port)
    d["providers"]["mockai"].update({"models": [MODEL], "rerank": True, **provider})
    return d


def body(**extra) -> bytes:
    return json.dumps({"model": MODEL, "query": PROMPT_CANARY,
                       "documents": ["a", "b", {"text": "c"}], "top_n": 2, **extra}).encode()


async def test_rerank_relayed_byte_for_byte_and_total_tokens_recorded(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/rerank", body(), auth_headers())
        assert reply.status == 200
        results = reply.json()["results"]
        assert len(results) == 2 and results[0]["relevance_score"] >= results[1]["relevance_score"]
        assert reply.body == mock.responses[-1].body, "the provider's bytes, unchanged"
        upstream = mock.requests[-1]
        assert upstream.path == "/v1/rerank" and json.loads(upstream.body)["top_n"] == 2
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["request_id"] == reply.headers["x-request-id"]
        assert row["status"] == 200 and row["task_type"] == "embedding"
        assert row["prompt_tokens"] == 48 and row["completion_tokens"] == 0


async def test_cohere_search_units_are_recorded_as_prompt_units(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/rerank", body(mock={"shape": "cohere"}),
                           auth_headers())
        assert reply.status == 200 and reply.json()["meta"]["billed_units"]["search_units"] == 1
        assert reply.body == mock.responses[-1].body
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["status"] == 200 and (row["prompt_tokens"], row["completion_tokens"]) == (1, 0)


async def test_the_cohere_kind_reranks_at_v2_beside_its_compatibility_api(tmp_path):
    """``kind = "cohere"``: chat goes to the Compatibility API the base URL names, rerank to
    Cohere's own ``/v2/rerank`` on the same origin with the same key; its search units are
    recorded and priced per unit when ``[prices.cohere]`` names the model."""
    async with running_mock() as mock:
        d = kraken_mapping(tmp_path, mock.port)
        d["providers"] = {"co": {
            "kind": "cohere", "base_url": f"http://127.0.0.1:{mock.port}/compatibility/v1",
            "api_key": PROVIDER_KEY, "models": ["command-a-03-2025", "rerank-v3.5"],
            "read_timeout_s": 5.0, "connect_timeout_s": 2.0}}
        d["prices"] = {"cohere": {"rerank-v3.5": {"input": 2000.0, "output": 0.0}}}
        async with running_kraken(d) as k:
            chat = await http(k.port, "POST", "/v1/chat/completions", json.dumps({
                "model": "command-a-03-2025",
                "messages": [{"role": "user", "content": "hi"}]}).encode(), auth_headers())
            reply = await http(k.port, "POST", "/v1/rerank", json.dumps({
                "model": "rerank-v3.5", "query": PROMPT_CANARY, "documents": ["a", "b"],
                "top_n": 1}).encode(), auth_headers())
            rows = await wait_rows(k.db_path, 2)
    assert chat.status == 200 and reply.status == 200
    assert [r.path for r in mock.requests] == ["/compatibility/v1/chat/completions", "/v2/rerank"]
    assert mock.requests[-1].header(b"authorization") == f"Bearer {PROVIDER_KEY}".encode()
    assert reply.body == mock.responses[-1].body
    assert reply.json()["meta"]["billed_units"] == {"search_units": 1}
    row = next(r for r in rows if r["model_requested"] == "rerank-v3.5")
    assert (row["provider"], row["task_type"], row["prompt_tokens"]) == ("co", "embedding", 1)
    assert row["cost_usd"] == pytest.approx(0.002)  # $2 per 1,000 searches


async def test_provider_without_rerank_is_404_in_openai_shape(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock, rerank=False)) as k:
        reply = await http(k.port, "POST", "/v1/rerank", body(), auth_headers())
        assert reply.status == 404
        error = reply.json()["error"]
        assert error["code"] == "model_not_found" and "rerank" in error["message"]
        assert not mock.requests
        assert (await wait_rows(k.db_path, 1))[0]["status"] == 404


async def test_provider_error_relayed_in_openai_shape(tmp_path):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/rerank", body(mock={"status": 422}),
                           auth_headers())
        assert reply.status == 422 and "error" in reply.json()
        assert (await wait_rows(k.db_path, 1))[0]["status"] == 422


@pytest.mark.parametrize("raw,field", [
    (b'{"query":"q","documents":["a"]}', "model"),
    (b'{"model":"%s","documents":["a"]}' % MODEL.encode(), "query"),
    (b'{"model":"%s","query":"q","documents":[]}' % MODEL.encode(), "documents"),
    (b'{"model":"%s","query":"q","documents":[1]}' % MODEL.encode(), "documents"),
    (b'{"model":"%s","query":"q","documents":["a"],"top_n":0}' % MODEL.encode(), "top_n"),
])
async def test_bad_body_is_400_naming_the_field(tmp_path, raw, field):
    async with running_mock() as mock, running_kraken(doc(tmp_path, mock)) as k:
        reply = await http(k.port, "POST", "/v1/rerank", raw, auth_headers())
        assert reply.status == 400 and field in reply.json()["error"]["message"]
        assert not mock.requests
