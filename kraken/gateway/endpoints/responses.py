"""``POST /v1/responses`` (OpenAI's Responses API) relayed, streaming or not, byte for byte.

Only providers whose preset (or config) says ``responses = true`` are tried. The body goes
upstream with only ``model`` replaced. Usage needs nothing forced (how it is read:
``kraken.providers.openai_responses``).
"""
from __future__ import annotations

from functools import partial

from kraken.errors import InvalidValue, ModelNotFound
from kraken.gateway.body import boolean, with_model
from kraken.gateway.call import Call
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.error_formats import OPENAI_RESPONSES
from kraken.providers.family import UpstreamRequest

PATH = "/v1/responses"
ROUTE = "responses"


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
    await gateway.dispatch(call, routes, payload, sink, shape)


def shape(route: Route, payload: dict) -> UpstreamRequest:
    """``Gateway.dispatch``'s shaper: nothing forced, nothing hidden (usage comes unasked);
    read as the Responses API (``kraken.providers.openai_responses``)."""
    return route.provider.family.responses_request(payload, route.model)


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

