"""Each phase of the lifecycle engine as a function of the call, without a client socket.

A real ``Gateway`` (in-memory limiter, real router, meter on a tmp SQLite store and journal),
called phase by phase with ``Request`` values; dispatch goes to Kraken's own mock provider."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import socket
import threading
import time
from dataclasses import replace

import pytest

from harness import PROVIDER_KEY, TEST_KEY, TEST_KEY_HASH
from kraken import config
from kraken.accounts.principal import Principal
from kraken.billing.settings import billing_settings
from kraken.errors import (
    BadRequest, MethodNotAllowed, ModelNotAllowed, ModelNotFound, NotFound, Overloaded,
    RateLimited, Unauthorized,
)
from kraken.gateway.call import Call
from kraken.gateway.endpoint import Parsed
from kraken.gateway.endpoints import METERED, chat, embeddings, gemini_native, messages
from kraken.gateway.pipeline import Gateway
from kraken.gateway.relay import DONE, Relay
from kraken.http.exchange import Request
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.mock.openai_mock import MockOpenAI
from kraken.policy.auth import KeyVerifier
from kraken.policy.limits import build_limiter
from kraken.policy.router import Provider, Router
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.openai_compat import OpenAICompat
from kraken.store.sqlite import SqliteStore
from kraken.upstream.pool import Origin, OriginPool

pytestmark = pytest.mark.anyio
CHAT = b'{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}'


class Collected:
    """The client's side of one answer, kept in memory."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list = []
        self.body = bytearray()
        self.started = self.ended = self.disconnected = False

    def start(self, status, headers, length) -> None:
        self.status, self.headers, self.started = status, headers, True

    def write(self, data: bytes) -> None:
        self.body += data

    def respond(self, status, headers, body) -> None:
        self.start(status, headers, len(body))
        self.write(body)
        self.end()

    def end(self) -> None:
        self.ended = True

    def cork(self) -> None: ...
    def flush(self) -> None: ...
    def abort(self) -> None: ...
    def set_producer(self, producer) -> None: ...


def request(path: str = "/v1/chat/completions", body: bytes = CHAT, key: str | None = TEST_KEY,
            method: str = "POST", headers: tuple = ()) -> Request:
    auth = ((b"authorization", b"Bearer " + key.encode()),) if key else ()
    return Request(method, path, auth + headers, body, "127.0.0.1", time.perf_counter_ns())


def build(port: int, **key) -> tuple[config.Config, Router, dict]:
    cfg = config.from_mapping({
        "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1", **key}],
        "providers": {
            "mockai": {"kind": "openai_compatible", "base_url": f"http://127.0.0.1:{port}/v1",
                       "api_key": PROVIDER_KEY, "models": ["mock-gpt"], "embeddings": False},
            "claude": {"kind": "anthropic", "base_url": "http://127.0.0.1:9/v1",
                       "api_key": "sk-ant-x", "models": ["claude-x"]},
        },
    }, "<t>", env={})
    providers = {}
    for p in cfg.providers:
        origin = Origin(p.base_url)
        family = AnthropicFamily if p.kind == "anthropic" else OpenAICompat
        providers[p.name] = Provider(p.name, family(p, origin.base_path, origin.authority),
                                     OriginPool(origin, p.name))
    return cfg, Router(providers, cfg.models, {p.name: p.models for p in cfg.providers},
                       routing=cfg.routing), providers


@contextlib.asynccontextmanager
async def gateway(tmp_path, **key):
    mock = MockOpenAI(api_key=PROVIDER_KEY)
    port = await mock.start()
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    cfg, router, providers = build(port, **key)
    settings = billing_settings(cfg)
    verifier = KeyVerifier(cfg.keys, cfg.auth)
    limiter = build_limiter(cfg.limits)
    meter = Meter(store, Journal(tmp_path / "journal"), cfg.meter)
    try:
        yield Gateway(verifier, limiter, router, meter, settings.prices, settings.fees)
    finally:
        for provider in providers.values():
            await provider.pool.close()
        verifier.close()
        await limiter.aclose()
        await store.close()
        await mock.close()


def new_call(route: str = "chat_completions") -> Call:
    return Call(time.perf_counter_ns(), route)


def parsed(req: Request, endpoint=chat.ENDPOINT, where=None) -> Parsed:
    return Parsed(req, endpoint.parse(req.body), where)


async def test_every_metered_endpoint_is_served_from_the_one_list(tmp_path):
    async with gateway(tmp_path) as gw:
        paths = [e.path for e in METERED]
        assert len(set(paths)) == len(paths)
        for path in paths:
            assert gw.paths.handler_for(path.replace("*", "m:generateContent"))


async def test_the_phases_name_the_customer_and_key_first_verified_then_cached(tmp_path):
    async with gateway(tmp_path) as gw:
        assert gw.cached_principal(request()) is None  # not verified yet: authenticate
        for _ in range(2):  # bcrypt once, then from the cache without an await
            call = new_call()
            await gw.phases(chat.ENDPOINT, call, request(), Collected())
            assert (call.customer_id, call.key_id) == ("cust_1", "testkey")
        assert gw.cached_principal(request()).key_id == "testkey"
        with pytest.raises(Unauthorized):
            await gw.phases(chat.ENDPOINT, new_call(), request(key=None), Collected())


async def test_a_bearer_token_wins_and_x_api_key_is_read_only_without_one(tmp_path):
    """Bearer first (x-api-key is not even looked up then); otherwise, including after an
    empty Bearer or another scheme, x-api-key."""
    looked: list[bytes] = []

    class Looked(Request):
        __slots__ = ()

        def header(self, name: bytes) -> bytes | None:
            looked.append(name)
            return super().header(name)

    def req(*headers) -> Request:
        return Looked("POST", "/v1/chat/completions", headers, CHAT, "127.0.0.1",
                      time.perf_counter_ns())

    bearer = (b"authorization", b"Bearer " + TEST_KEY.encode())
    async with gateway(tmp_path) as gw:
        await gw.authenticate(req(bearer))  # verified once: cached from now on
        looked.clear()
        assert (await gw.authenticate(req(bearer, (b"x-api-key", b"wrong")))).key_id \
            == "testkey"
        assert looked == [b"authorization"]
        for auth in ((b"authorization", b"Bearer "), (b"authorization", b"Basic eDp5")):
            looked.clear()
            principal = await gw.authenticate(req(auth, (b"x-api-key", TEST_KEY.encode())))
            assert principal.key_id == "testkey" and looked == [b"authorization", b"x-api-key"]
        with pytest.raises(Unauthorized):
            await gw.authenticate(req((b"authorization", b""), (b"x-api-key", b"kr_x")))


async def test_handle_hands_back_the_calls_own_coroutine_and_answers_refusals(tmp_path):
    """No coroutine of handle's own is held while a call lasts: it returns the metered call's
    (run) or a plain endpoint's; 404, 405 and a plain endpoint's refusal are still answered in
    the path's format with a request id."""
    async with gateway(tmp_path) as gw:
        sink = Collected()
        awaitable = gw.handle(request(), sink)
        assert awaitable.cr_code is Gateway.run.__code__
        await awaitable
        assert sink.status == 200
        for req, status in ((request(path="/v1/nope"), 404),
                            (request(method="GET"), 405)):
            sink = Collected()
            await gw.handle(req, sink)
            assert sink.status == status and b'"error"' in sink.body
            assert any(name == b"x-request-id" for name, _ in sink.headers)

        async def refusing(req, sink):
            raise BadRequest("no thanks")

        gw.add_endpoint("/v1/refusing", refusing)
        sink = Collected()
        await gw.handle(request(path="/v1/refusing"), sink)
        assert sink.status == 400 and b"no thanks" in sink.body
        assert any(name == b"x-request-id" for name, _ in sink.headers)


async def test_admit_reserves_the_record_or_refuses_while_shutting_down(tmp_path):
    async with gateway(tmp_path) as gw:
        call = new_call()
        gw.admit(call)
        assert call.reserved and gw.meter.depth == 1
        gw.shutting_down = True
        with pytest.raises(Overloaded):
            gw.admit(new_call())


async def test_billing_caps_without_billing_leave_the_key_as_it_is(tmp_path):
    async with gateway(tmp_path) as gw:
        principal = Principal("k", "c", rpm=3)
        assert gw.check_billing_caps(new_call(), principal) is principal


async def test_the_memory_limiter_leases_at_once_then_refuses_over_the_keys_rpm(tmp_path):
    async with gateway(tmp_path) as gw:
        principal = Principal("k", "c", rpm=1)
        call = new_call()
        gw.hold_lease(call, gw.limiter.acquire_now(principal))  # no await: decided in memory
        assert call.lease is not None and call.response_headers
        with pytest.raises(RateLimited):
            gw.limiter.acquire_now(principal)
        gw.release(call)
        assert call.lease is None


async def test_parse_checks_what_each_endpoint_relies_on():
    assert chat.parse(CHAT)["model"] == "mock-gpt"
    with pytest.raises(BadRequest):
        chat.parse(b'{"model":"m","messages":[]}')
    with pytest.raises(BadRequest):
        messages.MESSAGES.parse(b'{"model":"m","messages":[{"role":"user"}]}')  # no max_tokens
    assert messages.COUNT_TOKENS.parse(b'{"model":"m","messages":[{"role":"user"}]}')


async def test_check_model_allowed_by_name_allow_list_and_plan(tmp_path):
    async with gateway(tmp_path) as gw:
        gw.check_model_allowed(Principal("k", "c"), "mock-gpt")
        with pytest.raises(ModelNotAllowed):
            gw.check_model_allowed(Principal("k", "c", allowed_models=frozenset({"x"})),
                                   "mock-gpt")
        with pytest.raises(BadRequest):
            gw.check_model_allowed(Principal("k", "c"), "no spaces allowed")


async def test_classify_sets_stream_and_task_type():
    call = new_call()
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    Gateway.classify(call, chat.ENDPOINT, parsed(request(body=body)))
    assert call.stream is True and call.task_type
    call = new_call("embeddings")
    Gateway.classify(call, embeddings.ENDPOINT,
                     parsed(request(body=b'{"model":"m","input":"x"}'), embeddings.ENDPOINT))
    assert (call.stream, call.task_type) == (False, "embedding")


async def test_route_keeps_what_the_endpoint_serves_or_says_why_not(tmp_path):
    async with gateway(tmp_path) as gw:
        call = new_call()
        routes = gw.route(call, chat.ENDPOINT, "mock-gpt")
        assert [r.provider.name for r in routes] == ["mockai"]
        assert call.model_requested == "mock-gpt"
        with pytest.raises(ModelNotFound):
            gw.route(new_call(), embeddings.ENDPOINT, "mock-gpt")  # the mock does not embed
        with pytest.raises(ModelNotFound):
            gw.route(new_call(), messages.MESSAGES, "mock-gpt")  # not an Anthropic provider
        assert gw.route(new_call(), messages.MESSAGES, "claude-x")


async def test_locate_answers_gemini_405_and_404_after_identify():
    with pytest.raises(MethodNotAllowed):
        gemini_native.locate(request("/v1beta/models/m:generateContent", method="GET"))
    with pytest.raises(NotFound):
        gemini_native.locate(request("/v1beta/models/m:countTokens"))
    where = gemini_native.locate(replace(
        request(), target="/v1beta/models/m:streamGenerateContent?alt=sse"))
    assert (where.model, where.method, where.sse) == ("m", "streamGenerateContent", True)


async def test_dispatch_relays_the_providers_answer_and_records_the_call(tmp_path):
    async with gateway(tmp_path) as gw:
        call, sink, req = new_call(), Collected(), request()
        gw.admit(call)
        routes = gw.route(call, chat.ENDPOINT, "mock-gpt")
        await gw.dispatch(call, chat.ENDPOINT, routes, parsed(req), sink)
        assert sink.status == 200 and sink.ended and b"chat.completion" in sink.body
        assert (call.provider, call.model_dispatched, call.recorded) == ("mockai", "mock-gpt",
                                                                        True)
        assert call.usage is not None


async def test_relay_returns_its_final_state(tmp_path):
    async with gateway(tmp_path) as gw:
        call, req = new_call(), request()
        route = gw.route(call, chat.ENDPOINT, "mock-gpt")[0]
        assert await gw.relay(route, call, chat.ENDPOINT, parsed(req), Collected()) == DONE


async def test_the_relay_waits_on_the_loop_its_pool_dialled_in(tmp_path, monkeypatch):
    """The gateway hands Relay the pool's loop (no get_running_loop per request)."""
    import kraken.gateway.pipeline as pipeline

    loops = []

    def relay(*args, **kwargs):
        loops.append(inspect.signature(Relay).bind(*args, **kwargs).arguments.get("loop"))
        return Relay(*args, **kwargs)

    monkeypatch.setattr(pipeline, "Relay", relay)
    async with gateway(tmp_path) as gw:
        call, req = new_call(), request()
        route = gw.route(call, chat.ENDPOINT, "mock-gpt")[0]
        assert route.provider.pool.loop is None  # nothing dialled yet
        assert await gw.relay(route, call, chat.ENDPOINT, parsed(req), Collected()) == DONE
        assert loops == [asyncio.get_running_loop()] == [route.provider.pool.loop]


def test_a_streaming_call_holds_no_closure_of_the_gateway():
    """dispatch and relay make no lambda: while an answer streams, their frames held six and
    two closure cells, the closures' tuples and the functions (GC-tracked, per request)."""
    for method in (Gateway.dispatch, Gateway.relay):
        code = method.__code__
        assert not code.co_cellvars and not any(isinstance(c, type(code)) for c in code.co_consts)
    assert Call(time.perf_counter_ns(), "chat_completions").response_headers == ()


async def test_each_call_gets_the_same_bound_attempt_and_record(tmp_path, monkeypatch):
    """No bound method made per call (each would be held while the call lasts): every call
    hands fallback.dispatch the same attempt and its relay the same record."""
    import kraken.gateway.pipeline as pipeline

    attempts, completions = [], []
    dispatch = pipeline.fallback.dispatch

    def seen_dispatch(router, call, routes, attempt, sink, *args):
        attempts.append(attempt)
        return dispatch(router, call, routes, attempt, sink, *args)

    def relay(*args, **kwargs):
        completions.append(inspect.signature(Relay).bind(*args, **kwargs).arguments["on_complete"])
        return Relay(*args, **kwargs)

    monkeypatch.setattr(pipeline.fallback, "dispatch", seen_dispatch)
    monkeypatch.setattr(pipeline, "Relay", relay)
    async with gateway(tmp_path) as gw:
        for _ in range(2):
            call, sink = new_call(), Collected()
            gw.admit(call)
            await gw.dispatch(call, chat.ENDPOINT, gw.route(call, chat.ENDPOINT, "mock-gpt"),
                              parsed(request()), sink)
            assert sink.status == 200 and call.recorded  # on_complete still records
        assert attempts[0] is attempts[1] and completions[0].func is completions[1].func
        assert attempts[0].__func__ is Gateway.relay  # the relay itself: no wrapper's frame


async def test_record_pushes_one_record_per_admitted_call(tmp_path):
    async with gateway(tmp_path) as gw:
        call = new_call()
        gw.record(call)
        assert not call.recorded, "never admitted: nothing to record"
        gw.admit(call)
        call.status = 200
        gw.record(call)
        gw.record(call)
        assert call.recorded and gw.meter.depth == 1
        journal = b"".join(p.read_bytes() for p in (tmp_path / "journal").iterdir())
        assert journal.count(call.request_id.encode()) == 1


async def test_run_answers_a_refusal_in_the_endpoints_format_and_records_it(tmp_path):
    async with gateway(tmp_path) as gw:
        sink = Collected()
        await gw.run(messages.MESSAGES, request("/v1/messages", body=b"{}"), sink)
        assert sink.status == 400 and b'"type":"error"' in sink.body  # Anthropic's shape
        assert gw.meter.depth == 1, "admitted, then refused at parse: one record"
        sink = Collected()
        await gw.run(chat.ENDPOINT, request(key="kr_test_wrong"), sink)
        assert sink.status == 401 and gw.meter.depth == 1, "not admitted: no record"


def journaled(tmp_path) -> list[dict]:
    """The records the meter journaled so far (the journal is JSON lines)."""
    lines = b"".join(p.read_bytes() for p in (tmp_path / "journal").iterdir()).splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class OneAnswerProvider:
    """A provider on a plain socket in its own thread: it reads one request, says so
    (``received``), then answers one OpenAI chat completion. Its reading does not wait on
    Kraken's event loop, so a call that blocks the loop can still see the request arrive."""

    ANSWER = (b'{"id":"c1","object":"chat.completion","created":1,"model":"mock-gpt","choices":'
              b'[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.listener.settimeout(30)
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            self.received.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%b" % (len(self.ANSWER), self.ANSWER))

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


async def test_a_named_models_task_is_classified_once_the_provider_has_the_request(tmp_path):
    """Only ``auto`` routes by the task, so for a named model the classifier runs after the
    upstream request is written, off the first byte's path (``LateTask``)."""
    provider = OneAnswerProvider()
    try:
        async with gateway(tmp_path) as gw:
            _, router, providers = build(provider.port)
            gw.router = router
            seen = []

            def task(parsed: Parsed) -> str:
                # blocks the loop: the request can only reach the provider if already sent
                seen.append(provider.received.wait(5))
                return "summarization"

            endpoint = replace(chat.ENDPOINT, task=task)
            sink = Collected()
            await gw.run(endpoint, request(), sink)
            for p in providers.values():
                await p.pool.close()
        assert sink.status == 200, bytes(sink.body)
        assert seen == [True], "classified after the provider received the request, once"
        assert [r["task_type"] for r in journaled(tmp_path)] == ["summarization"]
    finally:
        provider.close()


async def test_a_call_refused_before_the_send_still_records_its_task(tmp_path):
    async with gateway(tmp_path) as gw:
        sink = Collected()
        body = b'{"model":"mock-gpt","input":"x"}'  # the mock's provider does not embed
        await gw.run(embeddings.ENDPOINT, request("/v1/embeddings", body=body), sink)
        assert sink.status == 404
        assert [(r["status"], r["task_type"]) for r in journaled(tmp_path)] == [
            (404, "embedding")]


def streamed(mock: dict | None = None) -> bytes:
    return json.dumps({"model": "mock-gpt", "stream": True, "mock": mock or {},
                       "messages": [{"role": "user", "content": "hi"}]}).encode()


class SeenAt:
    """The endpoint's task function, noting whether the client had a first byte when it ran."""

    def __init__(self, sink: Collected) -> None:
        self.sink, self.calls = sink, []

    def __call__(self, parsed: Parsed) -> str:
        self.calls.append(bytes(self.sink.body))
        return "code_gen"


async def test_a_streams_task_is_classified_with_its_record_after_the_first_byte(tmp_path):
    """In a burst the provider's think time is other streams' first bytes: a stream's label is
    made with its record, once, when the answer has been relayed (``journal``)."""
    async with gateway(tmp_path) as gw:
        sink = Collected()
        seen = SeenAt(sink)
        await gw.run(replace(chat.ENDPOINT, task=seen), request(body=streamed({"chunks": 3})), sink)
    assert sink.status == 200 and sink.ended
    assert len(seen.calls) == 1, "classified once"
    assert seen.calls[0].count(b"data: {") >= 4, "after the answer's events were relayed"
    assert [(r["status"], r["task_type"]) for r in journaled(tmp_path)] == [(200, "code_gen")]


async def test_a_stream_the_provider_breaks_still_records_its_task(tmp_path):
    async with gateway(tmp_path) as gw:
        sink = Collected()
        seen = SeenAt(sink)
        body = streamed({"chunks": 5, "drop_after_chunks": 2})
        await gw.run(replace(chat.ENDPOINT, task=seen), request(body=body), sink)
    assert sink.started and len(seen.calls) == 1
    [record] = journaled(tmp_path)
    assert record["task_type"] == "code_gen" and record["error_type"]


async def test_a_stream_the_client_leaves_still_records_its_task(tmp_path):
    async with gateway(tmp_path) as gw:
        sink = Collected()
        seen = SeenAt(sink)
        body = streamed({"chunks": 50, "chunk_delay_ms": 20})
        task = asyncio.get_running_loop().create_task(
            gw.run(replace(chat.ENDPOINT, task=seen), request(body=body), sink))
        deadline = time.monotonic() + 10
        while b"data: {" not in sink.body and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # until the first event is relayed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(seen.calls) == 1
    [record] = journaled(tmp_path)
    assert record["task_type"] == "code_gen" and record["error_type"]  # cancelled mid-stream
