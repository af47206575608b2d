"""``POST /v1/responses`` (OpenAI's Responses API) relayed, streaming or not, byte for byte.

Only providers whose preset (or config) says ``responses = true`` are tried. The body goes
upstream with only ``model`` replaced. Usage needs nothing forced (how it is read:
``kraken.providers.openai_responses``).
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import boolean, with_model
from kraken.gateway.endpoint import Endpoint, Parsed, asked_to_stream, model_not_served
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.providers.error_formats import OPENAI_RESPONSES
from kraken.providers.family import UpstreamRequest

PATH = "/v1/responses"


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    """Nothing forced, nothing hidden (usage comes unasked); read as the Responses API
    (``kraken.providers.openai_responses``)."""
    return route.provider.family.responses_request(parsed.payload, route.model)


def responds(route: Route) -> bool:
    return route.provider.family.cfg.responses


def _task(parsed: Parsed) -> str:
    return task_type("chat", as_chat(parsed.payload))


def parse(body: bytes) -> dict:
    payload = with_model(body)
    data = payload.get("input")
    if data is not None and not isinstance(data, (str, list)):
        raise InvalidValue("'input' must be a string or an array of input items",
                           param="input")
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



ENDPOINT = Endpoint(path=PATH, route="responses", parse=parse, task=_task, shape=shape,
                    errors=OPENAI_RESPONSES, stream=asked_to_stream, serves=responds,
                    not_served=model_not_served("is not served through the Responses API here"))
