"""fallback.dispatch without sockets: which errors move on, what health and breakers learn,
and that a customer who objected to non-essential processing feeds no routing statistics."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from kraken import config, metrics
from kraken.errors import (
    BadRequest, InvalidValue, PoolExhausted, PoolShareExceeded, UnsupportedParameter,
    UnsupportedValue, UpstreamError, UpstreamStatus, UpstreamTimeout,
)
from kraken.gateway import fallback
from kraken.policy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitOpen
from kraken.gateway.call import Call
from kraken.gateway.relay import DONE, FAILED
from kraken.policy.router import Provider, Router
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.pool import Origin, OriginPool

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


class Client:
    """The client side of the exchange: only whether a byte has been sent matters here."""

    started = False


def router(**routing) -> Router:
    cfg = config.from_mapping({
        "providers": {n: {"kind": "openai_compatible", "base_url": f"http://127.0.0.1:9/{n}"}
                      for n in ("ua", "ub")},
        "models": {"m": ["ua/um", "ub/um"]},
        "routing": {"breaker_failures": 2, **routing},
    }, "<t>", env={})
    providers = {}
    for p in cfg.providers:
        origin = Origin(p.base_url)
        providers[p.name] = Provider(p.name, OpenAICompat(p, origin.base_path, origin.authority),
                                     OriginPool(origin, p.name, max_connections=100,
                                                per_key_share=0.5))
    return Router(providers, cfg.models, {}, routing=cfg.routing, rng=random.Random(1),
                  clock=Clock())


def new_call(opted_out: bool = False) -> Call:
    call = Call(time.perf_counter_ns(), "chat_completions")
    call.opted_out = opted_out
    return call


def answering(outcomes: dict[str, object], tried: list[str], call: Call):
    """An attempt that raises or answers per provider, as an upstream would."""

    async def attempt(route):
        tried.append(route.provider.name)
        result = outcomes[route.provider.name]
        if isinstance(result, BaseException):
            raise result
        call.sent_ns = time.perf_counter_ns()
        call.ttfb_ns = call.sent_ns + 40_000_000  # 40 ms
        return result

    return attempt


@pytest.mark.parametrize("exc, moves_on", [
    (UpstreamStatus(429, b"{}"), True), (UpstreamStatus(503, b"{}"), True),
    (UpstreamStatus(400, b"{}"), False), (UpstreamStatus(404, b"{}"), False),
    (UpstreamError("x"), True), (UpstreamTimeout("x"), True), (BadRequest("x"), False),
])
def test_which_errors_fall_back(exc, moves_on):
    assert fallback.falls_back(exc) is moves_on


async def test_opted_out_customers_do_not_move_the_ewma():
    r = router()
    call = new_call(opted_out=True)
    tried: list[str] = []
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": UpstreamError("down"), "ub": DONE}, tried, call),
                            Client())
    assert tried == ["ua", "ub"] and call.fallback_used
    assert r.health.snapshot("ua", "um") == (None, 0.0)
    assert r.health.snapshot("ub", "um") == (None, 0.0)
    assert r.breakers["ua"].consecutive == 1, "the breaker still protects everyone"


async def test_other_customers_do_move_the_ewma():
    r = router()
    call = new_call()
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": UpstreamError("down"), "ub": DONE}, [], call),
                            Client())
    assert r.health.snapshot("ua", "um") == (None, pytest.approx(0.2))
    assert r.health.snapshot("ub", "um") == (pytest.approx(40.0), 0.0)


async def test_a_4xx_is_raised_at_once_and_counts_as_the_provider_answering():
    r = router()
    call, tried = new_call(), []
    with pytest.raises(UpstreamStatus):
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": UpstreamStatus(400, b"{}"), "ub": DONE},
                                          tried, call), Client())
    assert tried == ["ua"] and not call.fallback_used
    assert r.health.snapshot("ua", "um") == (None, 0.0)


async def test_no_fallback_once_the_client_has_bytes():
    r = router()
    call, tried, client = new_call(), [], Client()
    client.started = True
    with pytest.raises(UpstreamError):
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": UpstreamError("x"), "ub": DONE}, tried, call),
                                client)
    assert tried == ["ua"]


async def test_a_stream_broken_mid_way_is_a_failure_but_not_retried():
    r = router()
    call, tried = new_call(), []
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": FAILED, "ub": DONE}, tried, call), Client())
    assert tried == ["ua"]
    assert r.health.snapshot("ua", "um")[1] == pytest.approx(0.2)
    assert r.breakers["ua"].consecutive == 1


async def test_open_circuits_are_skipped_without_counting_as_attempts():
    r = router(max_attempts=1, breaker_cooldown_s=60)
    r.breakers["ua"].failure(), r.breakers["ua"].failure()
    assert r.breakers["ua"].state == OPEN
    call, tried = new_call(), []
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": DONE, "ub": DONE}, tried, call), Client())
    assert tried == ["ub"]
    assert (call.provider, call.fallback_used, call.error_type) == ("ub", True, "circuit_open")


async def test_a_cancelled_probe_is_released():
    r = router(breaker_cooldown_s=5)
    b = r.breakers["ua"]
    b.failure(), b.failure()
    b.clock.now += 5
    call = new_call()
    with pytest.raises(asyncio.CancelledError):
        await fallback.dispatch(r, call, r.candidates("m")[:1],
                                answering({"ua": asyncio.CancelledError()}, [], call), Client())
    assert b.allow(), "the next request may probe"


async def test_a_probe_refused_before_the_send_does_not_close_the_circuit():
    """A request Kraken refuses while shaping it (a 400 of its own, a BYOK key it cannot use)
    never reached the provider: it says nothing about the provider's health."""
    r = router(breaker_cooldown_s=5)
    b = r.breakers["ua"]
    b.failure(), b.failure()
    b.clock.now += 5
    call = new_call()
    with pytest.raises(InvalidValue):
        await fallback.dispatch(r, call, r.candidates("m")[:1],
                                answering({"ua": InvalidValue("stream_options")}, [], call),
                                Client())
    assert b.state == HALF_OPEN, "still unproven: the provider was never asked"
    assert b.allow(), "the next request may probe"


@pytest.mark.parametrize("refusal, answer", [
    (UnsupportedParameter("'audio' is not supported for Claude", param="audio"), UpstreamError),
    (InvalidValue("stream_options must be an object"), InvalidValue),
])
async def test_a_fallback_its_provider_cannot_honour_leaves_the_earlier_failure(refusal, answer):
    r = router()
    call, tried = new_call(), []
    with pytest.raises(answer):
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": UpstreamError("down"), "ub": refusal},
                                          tried, call), Client())
    assert tried == ["ua", "ub"]
    assert r.breakers["ub"].count == 0, "ub was never asked"


async def test_a_first_candidate_that_cannot_take_the_request_is_passed_over_unharmed():
    r = router(max_attempts=1)
    call, tried = new_call(), []
    fallbacks = metrics.REGISTRY.get_sample_value("kraken_fallbacks_total", {"provider": "ua"})
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": UnsupportedValue("'n' ...", param="n"), "ub": DONE},
                                      tried, call), Client())
    assert tried == ["ua", "ub"], "no attempt: max_attempts 1 still reaches ub"
    assert (call.provider, call.fallback_used, call.error_type) == ("ub", False, None)
    assert r.breakers["ua"].consecutive == 0 and r.health.snapshot("ua", "um") == (None, 0.0)
    assert metrics.REGISTRY.get_sample_value("kraken_fallbacks_total",
                                             {"provider": "ua"}) == fallbacks


@pytest.mark.parametrize("later, answer", [
    (UnsupportedParameter("'audio' ...", param="audio"), UnsupportedValue),  # no one can
    (UpstreamError("down"), UpstreamError),  # one could, and failed: its failure
])
async def test_when_nothing_serves_a_request_passed_over_first(later, answer):
    r = router()
    call = new_call()
    first = UnsupportedValue("'n' ...", param="n")
    with pytest.raises(answer) as raised:
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": first, "ub": later}, [], call), Client())
    if answer is UnsupportedValue:
        assert raised.value is first and call.provider == "ua"


async def test_a_full_pool_is_not_the_providers_failure_and_the_next_candidate_serves():
    r = router()
    call, tried = new_call(), []
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": PoolExhausted("busy"), "ub": DONE}, tried, call),
                            Client())
    assert tried == ["ua", "ub"]
    assert (call.provider, call.fallback_used) == ("ub", True)
    assert r.breakers["ua"].consecutive == 0 and r.breakers["ua"].count == 0
    assert r.health.snapshot("ua", "um") == (None, 0.0)


async def test_kraken_refusals_do_not_count_as_attempts_or_trip_the_breaker():
    r = router(max_attempts=1)
    refused = metrics.REGISTRY.get_sample_value("kraken_refused_total",
                                                {"reason": "pool_exhausted"}) or 0
    for _ in range(5):  # breaker_failures is 2 here
        call, tried = new_call(), []
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": PoolExhausted("busy"), "ub": DONE}, tried, call),
                                Client())
        assert tried == ["ua", "ub"]
    assert r.breakers["ua"].state == CLOSED
    assert metrics.REGISTRY.get_sample_value("kraken_refused_total",
                                             {"reason": "pool_exhausted"}) == refused + 5


async def test_when_every_pool_refuses_the_last_refusal_is_the_answer():
    r = router()
    call = new_call()
    with pytest.raises(PoolExhausted) as caught:
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": PoolExhausted("busy"),
                                           "ub": PoolExhausted("busy")}, [], call), Client())
    assert dict(caught.value.headers)[b"retry-after"] == b"1"
    assert call.error_type == "pool_exhausted"
    assert all(b.state == CLOSED and b.count == 0 for b in (r.breakers["ua"], r.breakers["ub"]))


async def test_a_key_over_its_share_of_a_pool_moves_on_and_gets_429_when_none_is_left():
    r = router()
    pools = {route.provider.name: route.provider.pool for route in r.candidates("m")}
    share = 50  # max_connections 100 x per_key_share 0.5
    holds = [pools["ua"].claim("hog") for _ in range(share)]
    call, tried = new_call_for("hog"), []
    await fallback.dispatch(r, call, r.candidates("m"),
                            answering({"ua": DONE, "ub": DONE}, tried, call), Client())
    assert tried == ["ub"], "ua refused the key before anything reached the provider"
    assert r.breakers["ua"].count == 0
    holds += [pools["ub"].claim("hog") for _ in range(share)]
    call, tried = new_call_for("hog"), []
    with pytest.raises(PoolShareExceeded) as caught:
        await fallback.dispatch(r, call, r.candidates("m"),
                                answering({"ua": DONE, "ub": DONE}, tried, call), Client())
    assert tried == [] and caught.value.status == 429
    assert dict(caught.value.headers)[b"retry-after"] == b"1"
    other, tried = new_call_for("other"), []
    await fallback.dispatch(r, other, r.candidates("m"),
                            answering({"ua": DONE, "ub": DONE}, tried, other), Client())
    assert len(tried) == 1 and not other.fallback_used, "other keys are not held back"
    for hold in holds:
        with hold:
            pass  # the hog's requests end
    again, tried = new_call_for("hog"), []
    await fallback.dispatch(r, again, r.candidates("m"),
                            answering({"ua": DONE, "ub": DONE}, tried, again), Client())
    assert len(tried) == 1 and not again.fallback_used


async def test_every_circuit_open_answers_with_the_seconds_until_the_first_probe():
    r = router(breaker_cooldown_s=30)
    clock = r.breakers["ua"].clock
    r.breakers["ua"].failure(), r.breakers["ua"].failure()
    clock.now += 20
    r.breakers["ub"].failure(), r.breakers["ub"].failure()
    with pytest.raises(CircuitOpen) as caught:
        await fallback.dispatch(r, new_call(), r.candidates("m"),
                                answering({"ua": DONE, "ub": DONE}, [], new_call()), Client())
    assert caught.value.status == 503
    assert dict(caught.value.headers)[b"retry-after"] == b"10"  # ua probes first


def new_call_for(key_id: str) -> Call:
    call = new_call()
    call.key_id = key_id
    return call


async def test_each_try_gets_the_route_then_dispatchs_own_arguments():
    """The gateway hands its attempt's arguments to dispatch instead of a closure over them."""
    r = router()
    call = new_call()
    seen = []

    async def attempt(route, *args):
        seen.append((route.provider.name, args))
        if route.provider.name == "ua":
            raise UpstreamError("down")
        return DONE

    marker = object()
    await fallback.dispatch(r, call, r.candidates("m"), attempt, Client(), call, marker)
    assert seen == [("ua", (call, marker)), ("ub", (call, marker))]
