"""``POST /v1/embeddings`` across the OpenAI-compatible providers that serve it.

The client's body goes upstream with only ``model`` replaced; the answer (one JSON body) comes
back unchanged and its ``usage.prompt_tokens`` is recorded, task type ``embedding``. Which
providers embed is a preset quirk (``embeddings``), overridable per provider.
"""
from __future__ import annotations

from functools import partial

import orjson

from kraken.errors import BadRequest, NotFound
from kraken.gateway.call import Call
from kraken.gateway.router import Route
from kraken.http.exchange import Request, ResponseSink

PATH = "/v1/embeddings"
ROUTE = "embeddings"


def register(gateway) -> None:
    gateway.add_endpoint(PATH, partial(embeddings, gateway))


async def embeddings(gateway, req: Request, sink: ResponseSink) -> None:
    await gateway.run_call(req, sink, ROUTE, partial(_phases, gateway))


async def _phases(gateway, call: Call, req: Request, sink: ResponseSink) -> None:
    principal = await gateway.authenticate(req)
    call.customer_id = principal.customer_id
    call.key_id = principal.key_id
    gateway.admit(call)
    await gateway.limit(call, principal)
    payload = parse(req.body)
    gateway.bill(principal, payload["model"])
    call.task_type = "embedding"
    call.opted_out = getattr(principal, "opted_out", False)
    routes = [r for r in gateway.router.candidates(payload["model"], task=call.task_type)
              if r.provider.family.cfg.embeddings]
    call.model_requested = payload["model"]
    if not routes:
        raise NotFound(f"The model '{payload['model'][:200]}' does not serve embeddings here",
                       code="model_not_found")
    await gateway.dispatch(call, routes, payload, sink, shape=shape)


def shape(route: Route, payload: dict, sink: ResponseSink) -> tuple:
    """``Gateway.dispatch``'s shaper: the route's own family, a plain (unstreamed) request."""
    family = route.provider.family
    target, headers, body = family.embeddings_request(payload, route.model)
    return family, sink, (target, headers, body, False)


def parse(body: bytes) -> dict:
    """Check what the gateway relies on; the provider validates the rest."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Request body is not valid JSON", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("Request body must be a JSON object", code="invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a string", code="invalid_value")
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
        raise BadRequest("'input' must be a string, an array of strings, or an array of token "
                         "arrays (non-empty)", code="invalid_value")
    if payload.get("stream"):
        raise BadRequest("'stream' is not supported for embeddings", code="invalid_value")
    return payload
