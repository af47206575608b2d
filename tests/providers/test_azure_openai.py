"""kind = "azure_openai" end to end: the real openai SDK -> a real Kraken -> Kraken's Azure OpenAI
mock (Azure's URL shape, ``api-key`` header, error envelope and content filter)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import openai
import pytest
from harness import (
    PROMPT_CANARY,
    TEST_KEY,
    TEST_KEY_HASH,
    auth_headers,
    free_port,
    http,
    running_kraken,
    wait_rows,
    write_toml,
)

from kraken.accounts import byok, masterkey, service
from kraken.mock.azure_mock import MockAzureOpenAI
from kraken.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

AZURE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # Azure keys: 32 hex digits, no "sk-" to scrub by
CUSTOMER_KEY = "c0ffee00c0ffee00c0ffee00c0ffee00"
TARGET = "/openai/deployments/my-mini/chat/completions?api-version=2024-10-21"
HI = [{"role": "user", "content": PROMPT_CANARY}]
# gpt-4o-mini at OpenAI's shipped price: 12 prompt tokens at $0.15/M + 20 completion at $0.60/M
COST = float((12 * Decimal("0.15") + 20 * Decimal("0.60")) / 1_000_000)


def azure_doc(tmp: Path, mock: MockAzureOpenAI, **provider) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp / "kraken.db")},
        "meter": {"flush_interval_ms": 20},
        "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1"}],
        "providers": {"azure": {
            "kind": "azure_openai", "base_url": mock.origin, "api_key": AZURE_KEY,
            "deployments": {"gpt-4o-mini": "my-mini"}, "read_timeout_s": 5.0,
            "connect_timeout_s": 2.0, **provider}},
    }


@contextlib.asynccontextmanager
async def azure_kraken(tmp: Path, **provider):
    async with MockAzureOpenAI({"my-mini": "gpt-4o-mini-2024-07-18"}, api_key=AZURE_KEY) as mock:
        async with running_kraken(azure_doc(tmp, mock, **provider)) as k:
            yield mock, k


def sdk(k) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key=TEST_KEY, max_retries=0)


def assert_azure_request(mock: MockAzureOpenAI, key: str = AZURE_KEY) -> dict:
    """The last request reached the deployment's URL with the key as ``api-key``; its body."""
    upstream = mock.requests[-1]
    assert upstream.path == TARGET
    assert upstream.header(b"api-key") == key.encode()
    assert upstream.header(b"authorization") is None
    return json.loads(upstream.body)


async def test_sdk_chat_reaches_the_deployment_url_and_is_relayed_and_priced(tmp_path):
    async with azure_kraken(tmp_path) as (mock, k):
        raw = await sdk(k).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=HI)
        answer = raw.parse()
        assert raw.content == mock.responses[-1].body, "the provider's bytes, unchanged"
        assert answer.model == "gpt-4o-mini-2024-07-18" and answer.usage.completion_tokens == 20
        sent = assert_azure_request(mock)
        assert sent["model"] == "gpt-4o-mini", "the upstream model name stays in the body"
        (row,) = await wait_rows(k.db_path, 1)
    assert (row["provider"], row["model_requested"], row["status"]) == ("azure", "gpt-4o-mini", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 20)
    assert row["cost_usd"] == pytest.approx(COST), "Azure bills OpenAI's price for the name"


async def test_sdk_stream_forces_usage_hides_it_and_keeps_azure_chunks(tmp_path):
    async with azure_kraken(tmp_path) as (mock, k):
        stream = await sdk(k).chat.completions.create(model="gpt-4o-mini", messages=HI,
                                                      stream=True)
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.startswith("tok0") and all(c.usage is None for c in chunks)
        assert chunks[0].choices == [], "Azure's prompt_filter_results chunk is relayed"
        assert assert_azure_request(mock)["stream_options"] == {"include_usage": True}
        reply = await http(k.port, "POST", "/v1/chat/completions", json.dumps(
            {"model": "gpt-4o-mini", "messages": HI, "stream": True}).encode(), auth_headers())
        provider = mock.responses[-1].body
        usage_event = next(e for e in provider.split(b"\n\n") if b'"usage":{' in e)
        assert reply.body == provider.replace(usage_event + b"\n\n", b""), "only usage hidden"
        asked = await http(k.port, "POST", "/v1/chat/completions", json.dumps(
            {"model": "gpt-4o-mini", "messages": HI, "stream": True,
             "stream_options": {"include_usage": True}}).encode(), auth_headers())
        assert asked.body == mock.responses[-1].body, "byte-identical when usage was asked for"
        rows = await wait_rows(k.db_path, 3)
    assert all((r["prompt_tokens"], r["completion_tokens"]) == (12, 20) for r in rows)
    assert all(r["cost_usd"] == pytest.approx(COST) for r in rows)


async def test_content_filter_refusal_is_openais_400_without_filter_details(tmp_path):
    async with azure_kraken(tmp_path) as (mock, k):
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk(k).chat.completions.create(
                model="gpt-4o-mini", messages=HI, extra_body={"mock": {"content_filter": "prompt"}})
        assert b"content_filter_result" in mock.responses[-1].body  # what Azure sent
        (row,) = await wait_rows(k.db_path, 1)
    exc = refused.value
    assert exc.status_code == 400 and exc.code == "content_filter"
    assert exc.type == "invalid_request_error" and exc.param == "prompt"
    body = exc.response.content
    assert b"innererror" not in body and b"violence" not in body and b"severity" not in body
    assert PROMPT_CANARY.encode() not in body
    assert row["status"] == 400


async def test_streamed_content_filter_finish_reason_reaches_the_client(tmp_path):
    async with azure_kraken(tmp_path) as (_, k):
        stream = await sdk(k).chat.completions.create(
            model="gpt-4o-mini", messages=HI, stream=True,
            extra_body={"mock": {"content_filter": "completion"}})
        finishes = [c.choices[0].finish_reason async for c in stream if c.choices]
        (row,) = await wait_rows(k.db_path, 1)
    assert finishes[-1] == "content_filter"
    assert row["completion_tokens"] == 20, "a filtered stream is still metered"


async def test_azure_errors_map_like_openais_and_never_echo_the_key(tmp_path):
    async with MockAzureOpenAI({"my-mini": "gpt-4o-mini"}, api_key=AZURE_KEY) as mock:
        doc = azure_doc(tmp_path, mock, models=["gpt-4o-mini", "gpt-4o"])
        async with running_kraken(doc) as k:
            with pytest.raises(openai.NotFoundError) as missing:  # gpt-4o: no such deployment
                await sdk(k).chat.completions.create(model="gpt-4o", messages=HI)
            assert mock.requests[-1].path.startswith("/openai/deployments/gpt-4o/chat/")
            mock._keys = {b"rotated-elsewhere"}
            with pytest.raises(openai.APIStatusError) as rejected:
                await sdk(k).chat.completions.create(model="gpt-4o-mini", messages=HI)
            seen_before_traversal = len(mock.requests)
            traversal = await http(k.port, "POST", "/v1/chat/completions", json.dumps(
                {"model": "azure/x/../../../admin", "messages": HI}).encode(), auth_headers())
            assert len(mock.requests) == seen_before_traversal, "no other path on the resource"
            with pytest.raises(openai.RateLimitError):
                mock._keys = {AZURE_KEY.encode()}
                await sdk(k).chat.completions.create(
                    model="gpt-4o-mini", messages=HI, extra_body={"mock": {"status": 429}})
    assert missing.value.code == "DeploymentNotFound"
    assert traversal.status == 400 and traversal.json()["error"]["param"] == "model"
    assert missing.value.type == "invalid_request_error"
    assert rejected.value.status_code == 502
    for exc in (missing.value, rejected.value):
        assert AZURE_KEY.encode() not in exc.response.content


async def test_byok_customer_key_is_sent_as_api_key(tmp_path):
    entry = masterkey.new_entry(1)
    key_file = tmp_path / "master.keys"
    key_file.write_text(entry + "\n")
    key_file.chmod(0o600)
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    try:
        customer = (await service.create_customer(store, "a@example.com")).id
        await byok.set_key(store, masterkey.load(str(key_file), ""), customer, "azure_openai",
                           CUSTOMER_KEY)
    finally:
        await store.close()
    async with MockAzureOpenAI({"my-mini": "gpt-4o-mini"}, api_key=AZURE_KEY) as mock:
        mock.accept_key(CUSTOMER_KEY)
        doc = azure_doc(tmp_path, mock)
        doc["keys"][0]["customer_id"] = customer
        doc["byok"] = {"master_key_file": str(key_file)}
        async with running_kraken(doc) as k:
            answer = await sdk(k).chat.completions.create(model="gpt-4o-mini", messages=HI)
            assert answer.usage.prompt_tokens == 12
            assert_azure_request(mock, key=CUSTOMER_KEY)
            (row,) = await wait_rows(k.db_path, 1)
    assert row["byok"] == 1 and row["cost_usd"] == pytest.approx(COST)
    assert CUSTOMER_KEY.encode() not in (tmp_path / "kraken.db").read_bytes()


async def test_entra_id_token_is_sent_as_bearer(tmp_path):
    async with MockAzureOpenAI({"my-mini": "gpt-4o-mini"}, ad_token="entra-token-1") as mock:
        doc = azure_doc(tmp_path, mock, auth="azure_ad", api_key="entra-token-1")
        async with running_kraken(doc) as k:
            answer = await sdk(k).chat.completions.create(model="gpt-4o-mini", messages=HI)
            assert answer.choices[0].message.content.startswith("tok0")
    upstream = mock.requests[-1]
    assert upstream.header(b"authorization") == b"Bearer entra-token-1"
    assert upstream.header(b"api-key") is None


async def test_embeddings_go_to_the_deployments_embeddings_url(tmp_path):
    async with MockAzureOpenAI({"emb": "text-embedding-3-small"}, api_key=AZURE_KEY) as mock:
        doc = azure_doc(tmp_path, mock, deployments={"text-embedding-3-small": "emb"},
                        api_version="2025-01-01-preview")
        async with running_kraken(doc) as k:
            raw = await sdk(k).embeddings.with_raw_response.create(
                model="text-embedding-3-small", input="hello")
            assert raw.content == mock.responses[-1].body
            (row,) = await wait_rows(k.db_path, 1)
    assert mock.requests[-1].path == \
        "/openai/deployments/emb/embeddings?api-version=2025-01-01-preview"
    assert row["prompt_tokens"] == 12 and row["status"] == 200


def test_missing_key_variable_is_named_at_startup(tmp_path):
    port = free_port()
    config = tmp_path / "kraken.toml"
    write_toml(config, {
        "server": {"host": "127.0.0.1", "port": port},
        "store": {"path": str(tmp_path / "kraken.db")},
        "providers": {"azure": {"kind": "azure_openai", "base_url": "https://res.openai.azure.com",
                                "models": ["gpt-4o-mini"]},
                      "entra": {"kind": "azure_openai", "auth": "azure_ad",
                                "base_url": "https://res2.openai.azure.com",
                                "models": ["gpt-4o"]}},
    })
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KRAKEN_", "AZURE_")) and not k.endswith("_API_KEY")}
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kraken", "serve", "--config", str(config)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "kraken listening" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    warnings = [line for line in err_path.read_text().splitlines() if "is not set" in line]
    assert len(warnings) == 2, warnings
    assert "provider azure: AZURE_OPENAI_API_KEY is not set" in warnings[0]
    assert "provider entra: AZURE_OPENAI_AD_TOKEN is not set" in warnings[1]
