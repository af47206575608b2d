"""``POST /v1/images/generations``: JSON in, JSON out, relayed byte for byte.

Only providers with ``images = true`` are tried. ``model`` is optional in OpenAI's API (default
``dall-e-2``); Kraken names that default when the body names none, then routes it like any
model. Streaming (gpt-image partial images) is refused with 400: this endpoint relays one body.
gpt-image answers carry ``usage`` (input/output tokens), recorded with their cost; DALL-E's do
not (null tokens). The body can be megabytes of base64: it is relayed as it arrives and only its
ends are tapped for ``usage``. Task type ``other``.
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import json_object
from kraken.gateway.endpoint import Endpoint, Parsed, model_not_served
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest

PATH = "/v1/images/generations"
DEFAULT_MODEL = "dall-e-2"
"""OpenAI's documented default for a body without ``model``."""


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    return route.provider.family.images_request(parsed.payload, route.model)


def draws(route: Route) -> bool:
    return route.provider.family.cfg.images


def parse(body: bytes) -> dict:
    payload = json_object(body)
    model = payload.setdefault("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise InvalidValue("'model' must be a non-empty string when given", param="model")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidValue("'prompt' is required and must be a non-empty string",
                           param="prompt")
    if payload.get("stream") not in (None, False):
        raise InvalidValue("'stream' is not supported for image generations here",
                           param="stream")
    return payload


def _task(parsed: Parsed) -> str:
    return "other"


ENDPOINT = Endpoint(path=PATH, route="images_generations", parse=parse, task=_task, shape=shape,
                    serves=draws, not_served=model_not_served("does not generate images here"))
