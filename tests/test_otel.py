"""OpenTelemetry traces: a real Kraken process exports one SERVER span per request over OTLP/HTTP
to a real receiver (tests/otlp_receiver.py), continues a client's W3C trace, and hands trace
context to self-hosted providers only."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time

import pytest
from harness import (
    PROMPT_CANARY,
    PROVIDER_KEY,
    TEST_KEY,
    KrakenProcess,
    auth_headers,
    free_port,
    http,
    kraken_mapping,
    running_mock,
    wait_for,
    write_toml,
)
from otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.anyio

PRICE = {"input": 1.0, "output": 2.0}
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
STATUS_ERROR = 2
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@contextlib.asynccontextmanager
async def traced(tmp_path, args=(), processes=None, **otel):
    """(mock, receiver, port): a Kraken process with [otel] in front of one mock provider,
    reachable as ``local`` (kind vllm, model mock-gpt) and ``hosted`` (kind openai, gpt-4o);
    ``args`` go before ``serve`` (e.g. ``--log-level DEBUG``), its log is ``k.log``; the
    process is appended to ``processes`` when given (to signal it)."""
    receiver = OtlpReceiver()
    await receiver.start()
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port})
        doc["providers"] = {
            "local": {"kind": "vllm", "base_url": mock.url, "api_key": PROVIDER_KEY,
                      "models": ["mock-gpt"]},
            "hosted": {"kind": "openai", "base_url": mock.url, "api_key": PROVIDER_KEY,
                       "models": ["gpt-4o"]},
        }
        doc["prices"] = {"vllm": {"mock-gpt": PRICE}}
        doc["otel"] = {"endpoint": receiver.endpoint, "service_name": "kraken-test",
                       "schedule_delay_ms": 20, **otel}
        write_toml(tmp_path / "k.toml", doc)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "k.log", args=list(args))
        await asyncio.to_thread(kp.start)
        if processes is not None:
            processes.append(kp)
        try:
            yield mock, receiver, port
        finally:
            kp.kill()
            await receiver.close()


async def chat(port, model="mock-gpt", stream=False, headers=None, **body):
    payload = {"model": model, "stream": stream,
               "messages": [{"role": "user", "content": PROMPT_CANARY}], **body}
    return await http(port, "POST", "/v1/chat/completions", json.dumps(payload).encode(),
                      {**auth_headers(), "content-type": "application/json", **(headers or {})})


async def span_for(receiver, request_id: str):
    return await wait_for(lambda: next(
        (s for s in receiver.spans if s.attributes.get("kraken.request_id") == request_id), None))


def usage_of(reply, stream: bool) -> dict:
    if not stream:
        return reply.json()["usage"]
    events = [json.loads(line[6:]) for line in reply.body.decode().splitlines()
              if line.startswith("data: {")]
    return next(e["usage"] for e in events if e.get("usage"))


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_span_carries_the_genai_attributes_of_the_record(tmp_path, stream):
    async with traced(tmp_path) as (mock, receiver, port):
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        reply = await chat(port, stream=stream, **extra)
        assert reply.status == 200
        span = await span_for(receiver, reply.headers["x-request-id"])
        usage = usage_of(reply, stream)
    assert span.name == "chat mock-gpt" and span.kind == SERVER_KIND
    assert span.resource["service.name"] == "kraken-test"
    attrs = span.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.system"] == attrs["gen_ai.provider.name"] == "vllm"
    assert attrs["gen_ai.request.model"] == "mock-gpt"
    assert attrs["gen_ai.response.model"] == "mock-gpt"
    assert attrs["gen_ai.usage.input_tokens"] == usage["prompt_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 20
    assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == mock.port
    assert attrs["http.response.status_code"] == 200
    assert attrs["kraken.ttfb_ms"] > 0
    assert attrs["kraken.cost_usd"] == pytest.approx((12 * 1.0 + 20 * 2.0) / 1e6)
    assert "error.type" not in attrs and span.status_code != STATUS_ERROR
    assert span.end_ns > span.start_ns
    assert not span.parent_span_id, "no traceparent from the client: a new trace"


async def test_error_request_span_names_the_error(tmp_path):
    async with traced(tmp_path) as (mock, receiver, port):
        reply = await chat(port, mock={"status": 400})
        assert reply.status == 400
        span = await span_for(receiver, reply.headers["x-request-id"])
    assert span.attributes["error.type"] == "upstream_status"
    assert span.attributes["http.response.status_code"] == 400
    assert span.status_code == STATUS_ERROR
    assert "gen_ai.usage.input_tokens" not in span.attributes


async def test_client_traceparent_is_continued_and_reaches_a_vllm_provider(tmp_path):
    async with traced(tmp_path) as (mock, receiver, port):
        reply = await chat(port, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                          "tracestate": "congo=t61rcWkgMzE"})
        span = await span_for(receiver, reply.headers["x-request-id"])
        upstream = mock.requests[-1]
    assert span.trace_id == TRACE_ID and span.parent_span_id == PARENT_ID
    assert span.trace_state == "congo=t61rcWkgMzE"
    assert upstream.header(b"traceparent") == f"00-{TRACE_ID}-{span.span_id}-01".encode(), \
        "the provider's parent is Kraken's span"
    assert upstream.header(b"tracestate") == b"congo=t61rcWkgMzE"


TRACESTATE_CANARY = "TRACESTATE-CANARY-5d1e"


@pytest.mark.parametrize("tracestate", [
    f"congo={TRACESTATE_CANARY},Bad{TRACESTATE_CANARY}",  # not a member: the SDK warns
    f"Bad'{TRACESTATE_CANARY}",  # an apostrophe ends "doesn't"'s literal before the canary
    f"k'{TRACESTATE_CANARY}=v",
])
async def test_a_malformed_tracestate_never_reaches_the_log(tmp_path, tracestate):
    """The client's tracestate is header text: the SDK's warning about a malformed one
    quotes it, and no level of the log may hold it (it is not forwarded either)."""
    async with traced(tmp_path, args=("--log-level", "DEBUG")) as (mock, receiver, port):
        reply = await chat(port, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                          "tracestate": tracestate})
        span = await span_for(receiver, reply.headers["x-request-id"])  # the span was built
        upstream = mock.requests[-1]
    assert span.trace_id == TRACE_ID and span.trace_state == ""
    assert upstream.header(b"tracestate") is None
    log = (tmp_path / "k.log").read_text()
    assert "request_id" in log and TRACESTATE_CANARY not in log, log


async def test_new_trace_reaches_a_vllm_provider_with_our_ids(tmp_path):
    async with traced(tmp_path) as (mock, receiver, port):
        reply = await chat(port)
        span = await span_for(receiver, reply.headers["x-request-id"])
        sent = mock.requests[-1].header(b"traceparent")
    assert sent == f"00-{span.trace_id}-{span.span_id}-01".encode()


async def test_trace_context_never_reaches_a_third_party_kind(tmp_path):
    async with traced(tmp_path) as (mock, receiver, port):
        reply = await chat(port, model="gpt-4o",
                           headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                                    "tracestate": "congo=t61rcWkgMzE"})
        assert reply.status == 200
        span = await span_for(receiver, reply.headers["x-request-id"])
        upstream = mock.requests[-1]
    assert span.trace_id == TRACE_ID, "the span still continues the client's trace"
    assert span.attributes["gen_ai.provider.name"] == "openai"
    assert upstream.header(b"traceparent") is None and upstream.header(b"tracestate") is None


async def test_propagate_to_lists_a_third_party_provider(tmp_path):
    async with traced(tmp_path, propagate_to=["hosted"]) as (mock, receiver, port):
        reply = await chat(port, model="gpt-4o",
                           headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        span = await span_for(receiver, reply.headers["x-request-id"])
        sent = mock.requests[-1].header(b"traceparent")
    assert sent == f"00-{TRACE_ID}-{span.span_id}-01".encode()


async def test_unsampled_client_trace_exports_nothing_but_still_propagates(tmp_path):
    async with traced(tmp_path) as (mock, receiver, port):
        unsampled = await chat(port, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
        sampled = await chat(port)
        await span_for(receiver, sampled.headers["x-request-id"])
        sent = mock.requests[-2].header(b"traceparent")
    assert all(s.attributes["kraken.request_id"] != unsampled.headers["x-request-id"]
               for s in receiver.spans)
    assert re.fullmatch(rb"00-" + TRACE_ID.encode() + rb"-[0-9a-f]{16}-00", sent)


async def test_no_content_keys_or_customer_in_any_span(tmp_path):
    async with traced(tmp_path) as (mock, receiver, port):
        ids = []
        for stream in (False, True):
            reply = await chat(port, stream=stream)
            assert PROMPT_CANARY.encode() in mock.requests[-1].body
            ids.append(reply.headers["x-request-id"])
        ids.append((await chat(port, mock={"status": 400})).headers["x-request-id"])
        for request_id in ids:
            await span_for(receiver, request_id)
        completion = mock.responses[-3].body
    exported = b"".join(receiver.bodies)
    for secret in (PROMPT_CANARY.encode(), TEST_KEY.encode(), PROVIDER_KEY.encode(),
                   b"cust_1", b"tok0 tok1", b"Mock error"):
        assert secret not in exported, secret
    assert b"tok0" in completion, "the answer did have content to leak"


async def test_a_stuck_collector_drops_spans_counted_and_requests_still_served(tmp_path):
    async with traced(tmp_path, max_queue=1, schedule_delay_ms=60000) as (mock, receiver, port):
        receiver.hold = True
        for _ in range(5):
            assert (await chat(port)).status == 200
        metrics = await http(port, "GET", "/metrics")
        dropped = re.search(rb"^kraken_otel_spans_dropped_total ([0-9.]+)$", metrics.body, re.M)
    assert dropped is not None and float(dropped.group(1)) >= 3


async def test_a_stuck_collector_holds_the_stop_for_two_seconds_at_most(tmp_path):
    """SIGTERM exports the queued spans, but a collector that takes them and never answers
    holds the stop for ``CLOSE_TIMEOUT_S`` only, not the SDK's 10 s per batch (up to 30 s,
    after the drain: systemd's TimeoutStopSec is 45)."""
    processes: list = []
    async with traced(tmp_path, processes=processes, schedule_delay_ms=60000) as (
            mock, receiver, port):
        ids = [(await chat(port)).headers["x-request-id"] for _ in range(3)]
        receiver.hold = True
        (kp,) = processes
        started = time.monotonic()
        kp.signal(signal.SIGTERM)
        assert await asyncio.to_thread(kp.wait, 60) == 0
        stopped_in = time.monotonic() - started
        exported = {s.attributes.get("kraken.request_id") for s in receiver.spans}
    assert set(ids) <= exported  # the queue was handed to the collector at the stop
    assert stopped_in < 6, stopped_in


def test_without_otel_the_sdk_is_never_imported(tmp_path):
    code = (
        "import sys, asyncio, tomllib\n"
        "from kraken import app, config\n"
        "from kraken.gateway import pipeline\n"
        "cfg = config.from_mapping({'store': {'path': sys.argv[1]}}, '<t>', env={})\n"
        "assert cfg.otel is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "k.db")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- config and trace context parsing -------------------------------------------------------


def otel_config(env=None, **otel):
    from kraken import config

    return config.from_mapping({"otel": otel}, "k.toml", env=env or {}).otel


def test_otel_config_reads_headers_from_the_environment_only():
    from kraken.config import ConfigError

    cfg = otel_config({"OTLP_AUTH": "authorization=Bearer s3cret, x-team=a"},
                      endpoint="https://collector.example:4318", headers_env="OTLP_AUTH",
                      propagate_to=["hosted"], sample_ratio=0.25)
    assert cfg.headers == (("authorization", "Bearer s3cret"), ("x-team", "a"))
    assert "s3cret" not in repr(cfg)
    for bad, key in ((dict(headers_env="UNSET"), "UNSET"), (dict(sample_ratio=1.5), "sample_ratio"),
                     (dict(endpoint="collector:4318"), "otel.endpoint"),
                     (dict(headers="a=b"), "otel.headers"), (dict(max_queue=0), "max_queue")):
        with pytest.raises(ConfigError, match=key):
            otel_config(**bad)
    with pytest.raises(ConfigError, match="OTLP_AUTH") as err:
        otel_config({"OTLP_AUTH": "no-equals-secret"}, headers_env="OTLP_AUTH")
    assert "no-equals-secret" not in str(err.value)


@pytest.mark.parametrize("header", [
    b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
    b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
    b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # 00 has no more fields
    b"garbage",
])
def test_invalid_traceparent_starts_a_new_trace(header):
    from kraken.telemetry.propagation import incoming

    ctx = incoming(header, b"congo=t61rcWkgMzE", 1 << 64)
    assert ctx.parent_span_id is None and ctx.trace_id != int(TRACE_ID, 16)
    assert ctx.tracestate is None, "a tracestate without its traceparent is not kept"


@pytest.mark.parametrize(("tracestate", "kept"), [
    (b"congo=t61rcWkgMzE", True),
    (b" rojo=00f067aa0ba902b7 ,, vendor@sys=a b , x=1 ", True),  # OWS, empty members, @
    (b",".join(b"k%d=v" % i for i in range(32)), True),
    (b",".join(b"k%d=v" % i for i in range(33)), False),  # more than 32 members
    (b"a=1,a=2", False),  # a key twice
    (b"Upper=1", False),
    (b"k=v,", True),
    (b"k=", False),  # no value
    (b"k=v ,x", False),  # not key=value
    (b"k=a=b", False),  # '=' in a value
])
def test_only_a_well_formed_tracestate_is_kept(tracestate, kept):
    from kraken.telemetry.propagation import incoming

    ctx = incoming(f"00-{TRACE_ID}-{PARENT_ID}-01".encode(), tracestate, 1 << 64)
    assert ctx.parent_span_id == int(PARENT_ID, 16)
    assert ctx.tracestate == (tracestate if kept else None)
