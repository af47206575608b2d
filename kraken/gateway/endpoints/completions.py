"""``POST /v1/completions`` (legacy text completions: vLLM/Ollama users, older tools), streamed
or not, relayed byte for byte.

Only providers whose preset (or config) says ``completions = true`` are tried. As on chat, a
stream asks upstream for ``stream_options.include_usage`` and the usage chunk is hidden again if
the client had not asked (``OpenAICompat.completions_request``); usage comes from that chunk or
the body's ``usage``. Classified as a chat request whose user text is the (first) prompt.
"""
from __future__ import annotations

from kraken.errors import InvalidValue
from kraken.gateway.body import boolean, with_model
from kraken.gateway.endpoint import Endpoint, Parsed, asked_to_stream, model_not_served
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.providers.family import UpstreamRequest

PATH = "/v1/completions"


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    return route.provider.family.completions_request(parsed.payload, route.model)


def completes(route: Route) -> bool:
    return route.provider.family.cfg.completions


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def parse(body: bytes) -> dict:
    """``prompt``: a string, an array of strings, a token array, or an array of token arrays."""
    payload = with_model(body)
    prompt = payload.get("prompt")
    ok = isinstance(prompt, str) or _is_tokens(prompt) or (
        isinstance(prompt, list) and bool(prompt) and (
            all(isinstance(p, str) for p in prompt) or all(_is_tokens(p) for p in prompt)))
    if not ok:
        raise InvalidValue("'prompt' must be a string, an array of strings, or an array of token "
                           "arrays (non-empty)", param="prompt")
    boolean(payload, "stream", "'stream' must be a boolean")
    return payload


def _task(parsed: Parsed) -> str:
    prompt = parsed.payload["prompt"]
    if isinstance(prompt, list):
        prompt = prompt[0] if isinstance(prompt[0], str) else ""
    return task_type("chat", {"prompt": prompt})


ENDPOINT = Endpoint(path=PATH, route="completions", parse=parse, task=_task, shape=shape,
                    stream=asked_to_stream, serves=completes,
                    not_served=model_not_served("is not served through legacy completions here"))
