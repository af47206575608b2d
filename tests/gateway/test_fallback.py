"""Fallback across candidates before the first byte, against a real Kraken and two (or three)
real mock providers: which failures move on, what the record says, circuit breakers, auto."""
from __future__ import annotations

import contextlib
import json

import anyio
import openai
import pytest
from harness import (
    auth_headers,
    http,
    kraken_mapping,
    openai_client,
    running_kraken,
    running_mock,
    wait_rows,
)

from kraken import metrics

pytestmark = pytest.mark.anyio


def chat(model: str = "gpt", stream: bool = False) -> bytes:
    return json.dumps({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


def provider(port: int, models: list[str]) -> dict:
    return {"kind": "openai_compatible", "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key": "sk-provider-secret-0123456789abcdefghij", "models": models,
            "read_timeout_s": 5.0, "connect_timeout_s": 2.0}


@contextlib.asynccontextmanager
async def stack(tmp_path, n_mocks: int = 2, **sections):
    """Mocks behind providers fa, fb (, fc) and Kraken with ``sections`` merged in."""
    async with contextlib.AsyncExitStack() as es:
        mocks = [await es.enter_async_context(running_mock()) for _ in range(n_mocks)]
        doc = kraken_mapping(tmp_path, mocks[0].port)
        doc["providers"] = {f"f{'abc'[i]}": provider(m.port, []) for i, m in enumerate(mocks)}
        doc["models"] = {"gpt": [f"f{'abc'[i]}/mock-gpt" for i in range(n_mocks)]}
        doc.update(sections)
        k = await es.enter_async_context(running_kraken(doc))
        yield mocks, k


def gauge(name: str, **labels) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


@pytest.mark.parametrize("status, error_type", [(503, "upstream_error"),
                                                (429, "upstream_rate_limited"),
                                                (500, "upstream_error")])
async def test_429_and_5xx_fall_back_and_the_record_says_so(tmp_path, status, error_type):
    async with stack(tmp_path) as ((a, b), k):
        a.fail_status = status
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 200
        assert r.json()["choices"][0]["message"]["content"]
        assert (len(a.requests), len(b.requests)) == (1, 1)
        [row] = await wait_rows(k.db_path, 1)
        assert row["model_requested"] == "gpt"
        assert row["model_dispatched"] == "mock-gpt"
        assert row["provider"] == "fb"
        assert row["fallback_used"] == 1
        assert row["error_type"] == error_type
        assert row["status"] == 200


async def test_a_400_is_the_requests_fault_and_does_not_fall_back(tmp_path):
    async with stack(tmp_path) as ((a, b), k):
        a.fail_status = 400
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 400
        assert (len(a.requests), len(b.requests)) == (1, 0)
        [row] = await wait_rows(k.db_path, 1)
        assert (row["provider"], row["fallback_used"], row["status"]) == ("fa", 0, 400)


async def test_a_stream_falls_back_while_no_byte_was_sent(tmp_path):
    async with stack(tmp_path) as ((a, _b), k):
        a.fail_status = 503
        r = await http(k.port, "POST", "/v1/chat/completions", chat(stream=True), auth_headers())
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.body.endswith(b"data: [DONE]\n\n")
        assert b"error" not in r.body
        [row] = await wait_rows(k.db_path, 1)
        assert (row["provider"], row["fallback_used"], row["error_type"]) == ("fb", 1, "upstream_error")


async def test_a_fallback_that_cannot_take_the_request_leaves_the_earlier_failure(tmp_path):
    """OpenAI first, Claude behind it: a valid OpenAI request Kraken cannot say to Claude (a
    parameter Claude lacks) is answered with the OpenAI provider's failure, which SDKs retry,
    not with a 400 telling the client its request is wrong."""
    from kraken.mock.anthropic_mock import MockAnthropic

    async with running_mock() as a, MockAnthropic() as claude:
        doc = kraken_mapping(tmp_path, a.port)
        doc["providers"] = {"fa": provider(a.port, []),
                            "claude": {"kind": "anthropic", "base_url": claude.url,
                                       "api_key": "sk-ant-provider", "models": []}}
        doc["models"] = {"gpt": ["fa/mock-gpt", "claude/claude-test"]}
        async with running_kraken(doc) as k:
            body = json.dumps({"model": "gpt", "reasoning_effort": "low",
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            assert (await http(k.port, "POST", "/v1/chat/completions", body,
                               auth_headers())).status == 200  # the OpenAI provider takes it
            a.fail_status = 503
            r = await http(k.port, "POST", "/v1/chat/completions", body, auth_headers())
            assert r.status == 502, r.body
            assert r.json()["error"]["type"] == "upstream_error"
            assert not claude.requests
            r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert r.status == 200, "a request Claude can take still falls back to it"
            rows = await wait_rows(k.db_path, 3)
            assert (rows[1]["status"], rows[1]["error_type"]) == (502, "upstream_error")
            assert (rows[2]["provider"], rows[2]["fallback_used"]) == ("claude", 1)


@contextlib.asynccontextmanager
async def claude_first(tmp_path, *others: str):
    """A Claude route first (breaker_failures 1: one failure would open its circuit), then
    ``others`` ("openai" for the OpenAI mock, "claude2" for a second Claude provider)."""
    from kraken.mock.anthropic_mock import MockAnthropic

    async with running_mock() as a, MockAnthropic() as claude:
        doc = kraken_mapping(tmp_path, a.port, routing={"breaker_failures": 1})
        claude_cfg = {"kind": "anthropic", "base_url": claude.url,
                      "api_key": "sk-ant-provider", "models": []}
        doc["providers"] = {"fa": provider(a.port, []), "claude": claude_cfg,
                            "claude2": dict(claude_cfg)}
        doc["models"] = {"gpt": ["claude/claude-test", *(
            "fa/mock-gpt" if name == "openai" else f"{name}/claude-test" for name in others)]}
        async with running_kraken(doc) as k:
            yield a, claude, k


def _claude_health() -> tuple:
    """What a failure of the Claude route would move: breaker, health, failure counters."""
    return (gauge("kraken_circuit_state", provider="claude"),
            gauge("kraken_route_error_rate_ewma", provider="claude", model="claude-test"),
            gauge("kraken_upstream_errors_total", provider="claude",
                  error_type="invalid_request_error"),
            gauge("kraken_fallbacks_total", provider="claude"))


async def test_a_first_candidate_that_cannot_take_the_request_passes_it_on(tmp_path):
    """Claude first, OpenAI behind it: ``n=2`` (which Claude cannot answer) is served by the
    OpenAI provider, through the real SDK; passing Claude over is no failure of Claude's."""
    async with claude_first(tmp_path, "openai") as (a, claude, k):
        before = _claude_health()
        answer = await openai_client(k).chat.completions.create(
            model="gpt", n=2, messages=[{"role": "user", "content": "hi"}])
        assert len(answer.choices) == 2
        assert not claude.requests and len(a.requests) == 1
        assert _claude_health() == before, "not the provider's failure"
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 200 and len(claude.requests) == 1, "Claude still serves what it can"
        rows = await wait_rows(k.db_path, 2)
        assert (rows[0]["provider"], rows[0]["fallback_used"], rows[0]["status"],
                rows[0]["error_type"]) == ("fa", 0, 200, None)


async def test_when_no_candidate_can_take_the_request_the_first_refusal_is_the_400(tmp_path):
    async with claude_first(tmp_path, "claude2") as (_a, claude, k):
        with pytest.raises(openai.BadRequestError) as refused:
            await openai_client(k).chat.completions.create(
                model="gpt", n=2, messages=[{"role": "user", "content": "hi"}])
        assert (refused.value.code, refused.value.param) == ("unsupported_value", "n")
        assert not claude.requests
        [row] = await wait_rows(k.db_path, 1)
        assert (row["provider"], row["status"], row["fallback_used"]) == ("claude", 400, 0)


async def test_an_unreachable_provider_falls_back(tmp_path):
    from harness import free_port

    async with running_mock() as b:
        doc = kraken_mapping(tmp_path, b.port)
        doc["providers"] = {"dead": provider(free_port(), []), "fb": provider(b.port, [])}
        doc["models"] = {"gpt": ["dead/mock-gpt", "fb/mock-gpt"]}
        async with running_kraken(doc) as k:
            r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
            assert r.status == 200
            [row] = await wait_rows(k.db_path, 1)
            assert (row["provider"], row["fallback_used"]) == ("fb", 1)
            assert row["error_type"].startswith("upstream")


async def test_attempts_are_bounded(tmp_path):
    async with stack(tmp_path, n_mocks=3, routing={"max_attempts": 2}) as ((a, b, c), k):
        a.fail_status = b.fail_status = 503
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 502
        assert (len(a.requests), len(b.requests), len(c.requests)) == (1, 1, 0)
        [row] = await wait_rows(k.db_path, 1)
        assert (row["provider"], row["fallback_used"], row["status"]) == ("fb", 1, 502)


async def test_breaker_opens_skips_the_provider_then_a_probe_closes_it(tmp_path):
    routing = {"breaker_failures": 2, "breaker_cooldown_s": 0.2}
    async with stack(tmp_path, routing=routing) as ((a, _b), k):
        a.fail_status = 503
        for _ in range(2):
            assert (await http(k.port, "POST", "/v1/chat/completions", chat(),
                               auth_headers())).status == 200
        assert gauge("kraken_circuit_state", provider="fa") == 2
        skips = gauge("kraken_circuit_skips_total", provider="fa") or 0
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 200
        assert len(a.requests) == 2, "an open circuit sends nothing to the provider"
        assert gauge("kraken_circuit_skips_total", provider="fa") == skips + 1
        rows = await wait_rows(k.db_path, 3)
        assert (rows[-1]["provider"], rows[-1]["fallback_used"], rows[-1]["error_type"]) == \
            ("fb", 1, "circuit_open")

        a.fail_status = None  # the provider recovers: after the cooldown one probe closes it
        with anyio.fail_after(10):
            while len(a.requests) == 2:
                await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
                await anyio.sleep(0.05)
        assert gauge("kraken_circuit_state", provider="fa") == 0
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 200 and len(a.requests) == 4


async def test_a_request_refused_before_the_send_does_not_close_an_open_circuit(tmp_path):
    routing = {"breaker_failures": 2, "breaker_cooldown_s": 0.2}
    async with stack(tmp_path, n_mocks=1, routing=routing) as ((a,), k):
        a.fail_status = 503
        for _ in range(2):
            assert (await http(k.port, "POST", "/v1/chat/completions", chat(),
                               auth_headers())).status == 502
        bad = json.dumps({"model": "gpt", "stream": True, "stream_options": 5,
                          "messages": [{"role": "user", "content": "hi"}]}).encode()
        with anyio.fail_after(10):  # 503 circuit_open until the cooldown lets a probe through
            while (await http(k.port, "POST", "/v1/chat/completions", bad,
                              auth_headers())).status != 400:
                await anyio.sleep(0.05)
        assert len(a.requests) == 2, "the malformed request never reached the provider"
        assert gauge("kraken_circuit_state", provider="fa") != 0, "it proved nothing"
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 502  # the real probe: the provider still fails
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert (r.status, r.json()["error"]["type"]) == (503, "circuit_open")
        assert len(a.requests) == 3


async def test_every_circuit_open_is_a_fast_503(tmp_path):
    async with stack(tmp_path, n_mocks=1, routing={"breaker_failures": 1,
                                                    "breaker_cooldown_s": 300}) as ((a,), k):
        a.fail_status = 503
        assert (await http(k.port, "POST", "/v1/chat/completions", chat(),
                           auth_headers())).status == 502
        r = await http(k.port, "POST", "/v1/chat/completions", chat(), auth_headers())
        assert r.status == 503
        assert r.json()["error"]["type"] == "circuit_open"
        assert len(a.requests) == 1
        rows = await wait_rows(k.db_path, 2)
        assert (rows[-1]["error_type"], rows[-1]["status"]) == ("circuit_open", 503)


async def test_auto_moves_to_the_healthy_provider_and_the_ewma_shows_why(tmp_path):
    prices = {"openai_compatible": {"auto-m1": {"input": 1, "output": 2}}}
    models = {"one": "fa/auto-m1", "two": "fb/auto-m1"}
    async with stack(tmp_path, models=models, prices=prices,
                     routing={"auto_models": ["one", "two"]}) as ((a, _b), k):
        a.fail_status = 503
        for _ in range(3):
            r = await http(k.port, "POST", "/v1/chat/completions", chat("auto"), auth_headers())
            assert r.status == 200
        rows = await wait_rows(k.db_path, 3)
        assert [(r["provider"], r["fallback_used"]) for r in rows] == \
            [("fb", 1), ("fb", 0), ("fb", 0)], "tried the failing one once, then avoided it"
        assert [r["model_requested"] for r in rows] == ["auto"] * 3
        assert len(a.requests) == 1
        assert gauge("kraken_route_error_rate_ewma", provider="fa", model="auto-m1") == \
            pytest.approx(0.2)
        assert gauge("kraken_route_ttfb_ewma_seconds", provider="fb", model="auto-m1") > 0


async def test_auto_picks_the_cheaper_model_and_aliases_reach_it(tmp_path):
    prices = {"openai_compatible": {"dear-m": {"input": 5, "output": 15},
                                    "cheap-m": {"input": 0.1, "output": 0.4}}}
    async with stack(tmp_path, models={"dear": "fa/dear-m", "cheap": "fb/cheap-m"},
                     prices=prices, aliases={"fast": "auto", "best-code": "dear"},
                     routing={"auto_models": ["dear", "cheap"],
                              "prefer": {"code_gen": ["dear"]}}) as ((_a, _b), k):
        for model in ("auto", "fast", "best-code"):
            r = await http(k.port, "POST", "/v1/chat/completions", chat(model), auth_headers())
            assert r.status == 200
        rows = await wait_rows(k.db_path, 3)
        assert [(r["model_requested"], r["provider"], r["model_dispatched"]) for r in rows] == [
            ("auto", "fb", "cheap-m"), ("fast", "fb", "cheap-m"), ("best-code", "fa", "dear-m")]
        listed = await http(k.port, "GET", "/v1/models", headers=auth_headers())
        ids = {m["id"] for m in listed.json()["data"]}
        assert {"auto", "fast", "best-code", "dear", "cheap"} <= ids
