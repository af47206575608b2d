"""``POST /v1/responses`` (OpenAI's Responses API) relayed, streaming or not, byte for byte.

Only providers whose preset (or config) says ``responses = true`` are tried. The body goes
upstream with only ``model`` replaced. Usage needs nothing forced: a stream ends with
``response.completed`` (or ``response.incomplete`` / ``response.failed``) whose ``response``
carries ``usage`` (``input_tokens``, ``output_tokens`` and their details); a plain answer has
it at the top level.
"""
from __future__ import annotations

from functools import partial

import orjson

from kraken.errors import InvalidValue, KrakenError, ModelNotFound
from kraken.gateway.body import boolean, with_model
from kraken.gateway.call import Call
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.error_formats import OPENAI_RESPONSES
from kraken.providers.openai_compat import OpenAICompat, responses_usage
from kraken.providers.usage import Usage
from kraken.providers.wire import usage_in_body

PATH = "/v1/responses"
ROUTE = "responses"
_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def register(gateway) -> None:
    gateway.add_call(PATH, ROUTE, partial(_phases, gateway), OPENAI_RESPONSES)


async def _phases(gateway, call: Call, req: Request, sink: ResponseSink) -> None:
    _, payload = await gateway.begin(call, req, parse)
    call.stream = payload.get("stream") is True
    call.task_type = task_type("chat", as_chat(payload))
    model = payload["model"]
    routes = gateway.routes_for(
        call, model, lambda r: r.provider.family.cfg.responses,
        lambda: ModelNotFound(f"The model '{model[:200]}' is not served through the Responses "
                              "API here"))
    await gateway.dispatch(call, routes, payload, sink, shape=shape)


def shape(route: Route, payload: dict, sink: ResponseSink) -> tuple:
    """``Gateway.dispatch``'s shaper: nothing forced, nothing hidden (usage comes unasked)."""
    family = route.provider.family
    target, headers, body = family.responses_request(payload, route.model)
    return ResponsesFamily(family), sink, (target, headers, body, False)


def parse(body: bytes) -> dict:
    payload = with_model(body)
    data = payload.get("input")
    if data is not None and not isinstance(data, (str, list)):
        raise InvalidValue("'input' must be a string or an array of input items")
    boolean(payload, "stream", "'stream' must be a boolean")
    return payload


def as_chat(payload: dict) -> dict:
    """The classifier's view: ``input`` as messages, ``instructions`` as the system prompt."""
    data = payload.get("input")
    messages = [{"role": "user", "content": data}] if isinstance(data, str) else (
        data if isinstance(data, list) else [])
    chat: dict = {"messages": messages}
    if isinstance(payload.get("instructions"), str):
        chat["system"] = payload["instructions"]
    if payload.get("tools"):
        chat["tools"] = payload["tools"]
    text = payload.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        chat["response_format"] = {"type": fmt["type"]}
    return chat


def usage_event(event: bytes) -> tuple[Usage, bool] | None:
    """For one SSE event: the usage of a final ``response.*`` event (never hidden)."""
    start = event.find(b"data:")
    if start < 0:
        return None
    try:
        obj = orjson.loads(event[start + 5 :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("type") not in _FINAL:
        return None
    response = obj.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    return (responses_usage(usage), False) if isinstance(usage, dict) else None


def usage_from_body(body: bytes) -> Usage | None:
    return usage_in_body(body, responses_usage)


class ResponsesFamily:
    """What the relay needs for a Responses API exchange; errors map as the provider's family."""

    __slots__ = ("base", "cfg", "name")

    def __init__(self, base: OpenAICompat):
        self.base, self.cfg, self.name = base, base.cfg, base.name

    usage_event = staticmethod(usage_event)
    usage_from_body = staticmethod(usage_from_body)

    def usage_parser(self):
        return usage_event

    def map_error(self, status: int, body: bytes) -> KrakenError:
        return self.base.map_error(status, body)

    sse_error_event = staticmethod(OPENAI_RESPONSES.sse_event)
    """The Responses API's own ``error`` event shape."""
