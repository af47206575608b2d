"""fallback.dispatch without sockets: which errors move on, what health and breakers learn,
and that a customer who objected to non-essential processing feeds no routing statistics."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from kraken import config
from kraken.errors import BadRequest, UpstreamError, UpstreamStatus, UpstreamTimeout
from kraken.gateway import fallback
from kraken.gateway.breaker import OPEN
from kraken.gateway.call import Call
from kraken.gateway.relay import DONE, FAILED
from kraken.gateway.router import Provider, Router
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
                                     OriginPool(origin, p.name))
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
