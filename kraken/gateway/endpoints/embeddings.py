"""``POST /v1/embeddings`` across the OpenAI-compatible providers that serve it.

The client's body goes upstream with only ``model`` replaced; the answer (one JSON body) comes
back unchanged and its ``usage.prompt_tokens`` is recorded, task type ``embedding``. Which
providers embed is a preset quirk (``embeddings``), overridable per provider.
"""
from __future__ import annotations

from functools import partial

from kraken.errors import InvalidValue, ModelNotFound
from kraken.gateway.body import with_model
from kraken.gateway.call import Call
from kraken.policy.router import Route
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.family import UpstreamRequest

PATH = "/v1/embeddings"
ROUTE = "embeddings"


def register(gateway) -> None:
    gateway.add_call(PATH, ROUTE, partial(_phases, gateway))


async def _phases(gateway, call: Call, req: Request, sink: ResponseSink) -> None:
    _, payload = await gateway.begin(call, req, parse)
    call.task_type = "embedding"
    model = payload["model"]
    routes = gateway.routes_for(
        call, model, lambda r: r.provider.family.cfg.embeddings,
        lambda: ModelNotFound(f"The model '{model[:200]}' does not serve embeddings here"))
    await gateway.dispatch(call, routes, payload, sink, shape)


def shape(route: Route, payload: dict) -> UpstreamRequest:
    """``Gateway.dispatch``'s shaper: the route's own family, a plain (unstreamed) request."""
    return route.provider.family.embeddings_request(payload, route.model)


def parse(body: bytes) -> dict:
    """Check what the gateway relies on; the provider validates the rest."""
    payload = with_model(body)
    data = payload.get("input")
    if isinstance(data, str):
        ok = True
    elif isinstance(data, list) and data:
        ok = all(isinstance(x, str) for x in data) or all(
            isinstance(x, int) and not isinstance(x, bool) for x in data) or all(
            isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)
            for x in data)
    else:
        ok = False
    if not ok:
        raise InvalidValue("'input' must be a string, an array of strings, or an array of token "
                           "arrays (non-empty)")
    if payload.get("stream"):
        raise InvalidValue("'stream' is not supported for embeddings")
    return payload
