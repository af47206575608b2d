"""``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent`` (Gemini native).

Google's SDKs and curl examples send the caller's key as ``x-goog-api-key``, as ``Authorization:
Bearer`` or as ``?key=`` in the URL. Here that key is the caller's *Kraken* key, accepted in all
three places; the query string is read for it and then dropped: it is never logged and never
forwarded (the upstream URL is built from the operator's base URL, the model and the method
only). Kraken's own provider key goes upstream in ``x-goog-api-key``, never in a URL.

Only providers of kind ``gemini`` serve this API; a model routed elsewhere is a 404.
"""
from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs

from kraken.errors import InvalidValue, KrakenError, MethodNotAllowed, NotFound
from kraken.gateway.body import json_object
from kraken.gateway.endpoint import Endpoint, Parsed
from kraken.policy.auth import credential
from kraken.policy.classify import task_type
from kraken.policy.router import Route
from kraken.http.exchange import Request
from kraken.providers.error_formats import GOOGLE
from kraken.providers.family import UpstreamRequest
from kraken.providers.gemini import METHODS, GeminiNative

PREFIX = "/v1beta/models/"
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")
_CLASSIFY_TURNS = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What the path and query say: ``/v1beta/models/{model}:{method}[?alt=sse]``."""

    model: str
    method: str
    sse: bool


def locate(req: Request) -> Target:
    """After identify (any method reaches us: errors must be in Google's shape): the 405, the
    path's 404, or what it names."""
    if req.method != "POST":
        raise MethodNotAllowed(f"Use POST for {PREFIX}{{model}}:{{method}}", allow="POST")
    model, method = parse_target(req.path)
    sse = method == "streamGenerateContent" and _query(req.target).get("alt") == ["sse"]
    return Target(model, method, sse)


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    """The client's body as is, the model and method in the path; read by ``GeminiNative``
    (Google's ``usageMetadata`` tap)."""
    where = parsed.where
    return native_family(route).request(route.model, where.method, parsed.req.body, sse=where.sse)


def serves_gemini(route: Route) -> bool:
    """Kind ``gemini``, or a provider whose family for the model speaks Gemini (Vertex AI)."""
    family = route.provider.family
    return family.cfg.kind == "gemini" or isinstance(family.for_model(route.model), GeminiNative)


def not_served(model: str) -> KrakenError:
    return NotFound(f"models/{model} is not served through the Gemini API here")


def _model(parsed: Parsed) -> str:
    return parsed.where.model


def _streamed(parsed: Parsed) -> bool:
    return parsed.where.sse


def _task(parsed: Parsed) -> str:
    return task_type("chat", as_chat(parsed.payload))


def native_family(route: Route) -> GeminiNative:
    """The native shaper for a ``gemini`` provider (built per call: a few header tuples)."""
    family = route.provider.family.for_model(route.model)
    if family.cfg.kind != "gemini" and isinstance(family, GeminiNative):
        return family  # Vertex AI's: its own path and credential
    origin = route.provider.pool.origin
    return GeminiNative(route.provider.family.cfg, origin.base_path, origin.authority)


def parse_target(path: str) -> tuple[str, str]:
    """(model, method) from ``/v1beta/models/{model}:{method}``, or a 404 naming what is wrong."""
    model, _, method = path[len(PREFIX):].partition(":")
    if method not in METHODS:
        raise NotFound(f"Method '{method[:40]}' is not supported; use generateContent or "
                       "streamGenerateContent")
    if _MODEL.fullmatch(model) is None:
        raise NotFound("The model name in the path is not valid")
    return model, method


def parse_body(body: bytes) -> dict:
    payload = json_object(body, "Invalid JSON payload received.",
                          "Invalid JSON payload received: the body must be an object.")
    contents = payload.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidValue("'contents' must be a non-empty array", param="contents")
    return payload


def as_chat(payload: dict) -> dict:
    """The classifier's view of a Gemini request: the last turns' text parts, as messages."""
    messages = []
    for content in payload["contents"][-_CLASSIFY_TURNS:]:
        if not isinstance(content, dict):
            continue
        parts = content.get("parts")
        parts = parts if isinstance(parts, list) else ()
        blocks = [{"type": "text", "text": p["text"]} for p in parts
                  if isinstance(p, dict) and isinstance(p.get("text"), str)]
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": blocks})
    chat: dict = {"messages": messages}
    system = payload.get("systemInstruction") or payload.get("system_instruction")
    if isinstance(system, dict) and isinstance(system.get("parts"), list):
        chat["system"] = [{"type": "text", "text": p["text"]} for p in system["parts"]
                          if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if payload.get("tools"):
        chat["tools"] = payload["tools"]
    config = payload.get("generationConfig")
    if isinstance(config, dict) and config.get("responseMimeType") == "application/json":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _query(target: str) -> dict[str, list[str]]:
    _, _, query = target.partition("?")
    try:
        return parse_qs(query, max_num_fields=20) if query else {}
    except ValueError:  # too many fields: treated as none (nothing in it is needed then)
        return {}


def _with_kraken_key(req: Request) -> Request:
    """``req`` with the caller's key as a Bearer credential, wherever Google's SDKs put it."""
    token = req.header(b"x-goog-api-key")
    if token is not None:
        token = token.strip()
    if not token:
        token = credential(req.header(b"authorization"), None)
    if not token:
        keys = _query(req.target).get("key")
        token = keys[0].encode("latin-1", "replace") if keys else None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if token:
        headers = ((b"authorization", b"Bearer " + token),)
    forwarded = req.header(b"x-forwarded-for")
    if forwarded is not None:
        headers += ((b"x-forwarded-for", forwarded),)
    return dataclasses.replace(req, headers=headers)


ENDPOINT = Endpoint(
    path=PREFIX + "*", route="gemini_generate_content", parse=parse_body, task=_task, shape=shape,
    errors=GOOGLE, method=None, model=_model, stream=_streamed, serves=serves_gemini,
    not_served=not_served, credentials=_with_kraken_key, locate=locate,
)
