"""Endpoints the official SDKs call beside completions, through the real ``openai`` and
``anthropic`` SDKs: ``messages.count_tokens``, ``models.retrieve`` and ``models.list`` (which
lists only what the calling key may use), and Anthropic-shaped errors under ``/v1/messages``."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anthropic
import openai
import pytest
from adminkit import admin_doc
from harness import (
    PROVIDER_KEY,
    TEST_KEY,
    auth_headers,
    free_port,
    http,
    kraken_mapping,
    running_kraken,
    running_mock,
    wait_rows,
)

from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

HI = [{"role": "user", "content": "hi"}]


def with_claude(doc: dict, mock: MockAnthropic) -> dict:
    doc["providers"]["claude"] = {"kind": "anthropic", "base_url": mock.url, "api_key": PROVIDER_KEY,
                                  "models": ["claude-test"], "read_timeout_s": 5.0,
                                  "connect_timeout_s": 2.0}
    return doc


@contextlib.asynccontextmanager
async def claude_kraken(tmp: Path, **sections):
    async with MockAnthropic(api_key=PROVIDER_KEY, input_tokens=37) as mock:
        async with running_kraken(with_claude(kraken_mapping(tmp, 9, **sections), mock)) as k:
            yield mock, k


def claude_sdk(k, key: str = TEST_KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=k.base_url, api_key=key, max_retries=0)


def openai_sdk(k, key: str = TEST_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=k.base_url + "/v1", api_key=key, max_retries=0)


async def test_anthropic_sdk_count_tokens_reaches_the_provider_and_is_recorded_unbilled(tmp_path):
    async with claude_kraken(tmp_path) as (mock, k):
        counted = await claude_sdk(k).messages.count_tokens(model="claude-test", messages=HI)
        rows = await wait_rows(k.db_path, 1)
    assert counted.input_tokens == 37
    assert mock.requests[-1].path == "/v1/messages/count_tokens"
    assert json.loads(mock.requests[-1].body)["model"] == "claude-test"
    (row,) = rows  # one record per admitted call; Anthropic does not bill token counting
    assert (row["model_requested"], row["provider"], row["status"]) == ("claude-test", "claude", 200)
    assert row["task_type"] == "count_tokens"
    assert row["prompt_tokens"] is None and row["cost_usd"] is None


async def test_errors_under_anthropic_paths_are_anthropic_shaped(tmp_path):
    async with claude_kraken(tmp_path) as (_, k):
        client = claude_sdk(k)
        with pytest.raises(anthropic.NotFoundError) as unknown_model:
            await client.messages.count_tokens(model="claude-nowhere", messages=HI)
        with pytest.raises(anthropic.NotFoundError) as unknown_path:
            await client.post("/v1/messages/nowhere", body={}, cast_to=object)
        with pytest.raises(anthropic.AuthenticationError):
            await claude_sdk(k, key="kr_test_nobody_" + "x" * 30).messages.count_tokens(
                model="claude-test", messages=HI)
        wrong_method = await http(k.port, "GET", "/v1/messages/count_tokens",
                                  headers={"x-api-key": TEST_KEY})
    for exc in (unknown_model.value, unknown_path.value):
        assert exc.body["type"] == "error" and exc.body["error"]["type"] == "not_found_error", exc.body
        assert exc.response.headers["x-request-id"].startswith("req_")
    assert wrong_method.status == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["type"] == "error", wrong_method.body


async def test_openai_sdk_retrieves_a_model_and_not_an_unknown_one(tmp_path):
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            client = openai_sdk(k)
            model = await client.models.retrieve("mock-gpt")
            with pytest.raises(openai.NotFoundError) as unknown:
                await client.models.retrieve("gpt-nowhere")
            with pytest.raises(openai.AuthenticationError):
                await openai_sdk(k, key="kr_test_nobody_" + "x" * 30).models.retrieve("mock-gpt")
    assert (model.id, model.object, model.owned_by) == ("mock-gpt", "model", "mockai")
    assert unknown.value.code == "model_not_found"


async def test_model_list_shows_only_what_the_key_and_its_plan_may_use(tmp_path):
    """The plan allows two of three models; a database key allows one of those."""
    providers = {"mockai": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:9/v1",
                            "api_key": PROVIDER_KEY, "models": ["mock-a", "mock-b", "mock-c"]}}
    plans = {"default": "small", "small": {"allowed_models": ["mock-a", "mock-b"]}}
    async with running_mock() as mock:
        providers["mockai"]["base_url"] = f"http://127.0.0.1:{mock.port}/v1"
        admin_port = free_port()
        doc = admin_doc(tmp_path, mock.port, admin_port, providers=providers, plans=plans)
        async with running_kraken(doc) as k:
            from adminkit import Admin

            admin = Admin(admin_port, k.db_path)
            cus = await admin.customer()
            made = await admin.ok("POST", "/admin/keys", {"customer_id": cus["id"],
                                                          "allowed_models": ["mock-a"]}, 201)
            plan_key = [m.id async for m in openai_sdk(k).models.list()]
            narrow = openai_sdk(k, key=made["secret"])
            narrow_key = [m.id async for m in narrow.models.list()]
            with pytest.raises(openai.NotFoundError):
                await narrow.models.retrieve("mock-b")
            raw = await http(k.port, "GET", "/v1/models", headers=auth_headers(made["secret"]))
    assert plan_key == ["mock-a", "mock-b"]
    assert narrow_key == ["mock-a"]
    assert raw.status == 200 and [m["id"] for m in raw.json()["data"]] == ["mock-a"]
