"""``POST /v1/embeddings`` across the OpenAI-compatible providers that serve it.

The client's body goes upstream with only ``model`` replaced; the answer (one JSON body) comes
back unchanged and its ``usage.prompt_tokens`` is recorded, task type ``embedding``. Which
providers embed is a preset quirk (``embeddings``), overridable per provider.
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import with_model
from kraken.gateway.endpoint import Endpoint, Parsed, model_not_served
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest

PATH = "/v1/embeddings"


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    """The route's own family, a plain (unstreamed) request."""
    return route.provider.family.embeddings_request(parsed.payload, route.model)


def embeds(route: Route) -> bool:
    """Which providers embed is a preset quirk, overridable per provider."""
    return route.provider.family.cfg.embeddings


def _task(parsed: Parsed) -> str:
    return "embedding"


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
                           "arrays (non-empty)", param="input")
    if payload.get("stream"):
        raise InvalidValue("'stream' is not supported for embeddings", param="stream")
    return payload


ENDPOINT = Endpoint(path=PATH, route="embeddings", parse=parse, task=_task, shape=shape,
                    serves=embeds, not_served=model_not_served("does not serve embeddings here"))
