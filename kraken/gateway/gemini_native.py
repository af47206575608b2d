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
import time
from functools import partial
from urllib.parse import parse_qs

import orjson

from kraken.accounts.byok import ByokKeyUnusable
from kraken.errors import (
    BadRequest,
    KrakenError,
    MethodNotAllowed,
    NotFound,
    UpstreamError,
    UpstreamStatus,
)
from kraken.gateway import fallback
from kraken.gateway.auth import credential
from kraken.gateway.call import Call
from kraken.gateway.classify import task_type
from kraken.gateway.relay import Relay
from kraken.gateway.router import Route
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.gemini import METHODS, GeminiNative, UsageMetadataTap, google_error_body

PREFIX = "/v1beta/models/"
ROUTE = "gemini_generate_content"
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")
_CLASSIFY_TURNS = 8


def register(gateway) -> None:
    """Serve the native paths (any method reaches us: errors must be in Google's shape)."""
    gateway.add_endpoint(PREFIX + "*", partial(generate_content, gateway), None)


async def generate_content(gateway, req: Request, sink: ResponseSink) -> None:
    await gateway.run_call(req, sink, ROUTE, partial(_phases, gateway), send_google_error)


async def _phases(gateway, call: Call, req: Request, sink: ResponseSink) -> None:
    principal = await gateway.authenticate(_with_kraken_key(req))
    call.customer_id = principal.customer_id
    call.key_id = principal.key_id
    if req.method != "POST":
        raise MethodNotAllowed(f"Use POST for {PREFIX}{{model}}:{{method}}")
    model, method = parse_target(req.path)
    sse = method == "streamGenerateContent" and _query(req.target).get("alt") == ["sse"]
    gateway.admit(call)
    await gateway.limit(call, principal)
    payload = parse_body(req.body)
    gateway.bill(principal, model)
    call.stream = sse
    call.task_type = task_type("chat", as_chat(payload))
    call.opted_out = getattr(principal, "opted_out", False)
    routes = [r for r in gateway.router.candidates(model, task=call.task_type)
              if r.provider.family.cfg.kind == "gemini"]
    call.model_requested = model
    if not routes:
        raise NotFound(f"models/{model} is not served through the Gemini API here")
    await gateway.load_byok(call)
    # The shared fallback rules (circuits, attempt bound, 429/5xx/connect only, health).
    await fallback.dispatch(gateway.router, call, routes,
                            lambda route: exchange(gateway, call, route, method, req.body, sink),
                            sink)


async def exchange(gateway, call: Call, route: Route, method: str, body: bytes,
                   sink: ResponseSink) -> str:
    """One upstream exchange (``Gateway.relay`` with Gemini's shaping and usage tap)."""
    family = native_family(route)
    target, headers, body = family.request(route.model, method, body, sse=call.stream)
    headers = authorize(call, family, headers)
    pool = route.provider.pool
    for fresh_retry in (False, True):
        conn = await pool.acquire()
        relay = GeminiRelay(call, sink, family, stream=call.stream, hide_usage=False,
                            on_complete=lambda: gateway.record(call))
        call.sent_ns = time.perf_counter_ns()
        conn.send("POST", target, headers, body, relay)
        sink.set_producer(conn)
        try:
            await relay.done
            return relay.state
        except UpstreamError:
            stale = conn.used > 1 and not conn.received_any and not relay.started
            conn.abort()
            if stale and not fresh_retry:
                continue
            raise
        except BaseException:
            relay.cancel()
            conn.abort()  # client gone or shutdown: the provider call is cancelled now
            raise
        finally:
            sink.set_producer(None)
            pool.release(conn)
    raise AssertionError("unreachable")


def authorize(call: Call, family: GeminiNative, headers: list) -> list:
    """The customer's own Gemini key (BYOK) in ``x-goog-api-key`` when they have one."""
    key = call.byok_keys.get("gemini") if call.byok_keys else None
    call.byok = False
    if key is None:
        return headers
    if isinstance(key, ByokKeyUnusable):
        raise key  # never fall back to the operator's key behind the customer's back
    call.byok = True
    return family.authorized(headers, key)


class GeminiRelay(Relay):
    """The relay with a ``usageMetadata`` tap: Google's usage key is not OpenAI's ``usage``."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._tap is not None:
            self._tap = UsageMetadataTap()


def native_family(route: Route) -> GeminiNative:
    """The native shaper for a ``gemini`` provider (built per call: a few header tuples)."""
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
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Invalid JSON payload received.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("Invalid JSON payload received: the body must be an object.")
    contents = payload.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("'contents' must be a non-empty array", code="invalid_value")
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


def send_google_error(sink: ResponseSink, exc: KrakenError, call: Call) -> None:
    """Kraken's errors in Google's shape; a provider's own 4xx body is relayed (scrubbed)."""
    body = exc.body if isinstance(exc, UpstreamStatus) and exc.body else google_error_body(exc)
    headers = [(b"content-type", b"application/json; charset=UTF-8"), *exc.headers,
               (b"x-request-id", call.request_id.encode())]
    sink.start(exc.status, headers, len(body))
    sink.write(body)
    sink.end()
