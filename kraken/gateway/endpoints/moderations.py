"""``POST /v1/moderations`` (OpenAI's moderation API), relayed byte for byte, never streamed.

OpenAI makes ``model`` optional (its default: ``omni-moderation-latest``); Kraken does the same
by naming that default when the body names none, and then routes it like any model: the operator
serves it by listing ``omni-moderation-latest`` (or a ``[models]`` alias of that name) on a
provider with ``moderations = true``. Otherwise 404 ``model_not_found``. The answer reports no
usage: the record keeps null tokens and cost. Task type ``other``.
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import json_object
from kraken.gateway.endpoint import Endpoint, Parsed, model_not_served
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest

PATH = "/v1/moderations"
DEFAULT_MODEL = "omni-moderation-latest"
"""OpenAI's documented default for a body without ``model``."""


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    return route.provider.family.moderations_request(parsed.payload, route.model)


def moderates(route: Route) -> bool:
    return route.provider.family.cfg.moderations


def parse(body: bytes) -> dict:
    """``input``: a string, or a non-empty array (strings, or text/image parts)."""
    payload = json_object(body)
    model = payload.setdefault("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise InvalidValue("'model' must be a non-empty string when given", param="model")
    data = payload.get("input")
    ok = isinstance(data, str) or (isinstance(data, list) and bool(data) and (
        all(isinstance(x, str) for x in data) or all(isinstance(x, dict) for x in data)))
    if not ok:
        raise InvalidValue("'input' must be a string, an array of strings, or an array of "
                           "text/image objects (non-empty)", param="input")
    return payload


def _task(parsed: Parsed) -> str:
    return "other"


ENDPOINT = Endpoint(path=PATH, route="moderations", parse=parse, task=_task, shape=shape,
                    serves=moderates,
                    not_served=model_not_served("does not serve moderations here"))
