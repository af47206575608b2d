"""The admin listener's request handler: token check, route table, JSON in and out.

It runs on Kraken's own HTTP stack (``ProtocolSelector``) on a separate address, so client
traffic can never reach it. Every route is ``METHOD /path/{param}`` -> an async function
taking an ``AdminCall``; it returns ``(status, json-able)`` or streams through ``call.sink``.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kraken.admin.errors import (
    AdminError, AdminInternalError, AdminMethodNotAllowed, AdminNotFound, unauthorized,
)
from kraken.admin.token import bearer, token_matches
from kraken.admin.validate import ID_RE, json_object, path_segment, query
from kraken.errors import DatabaseBusy, KrakenError, PayloadTooLarge
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.error_formats import OPENAI
from kraken.store.errors import StoreBusy

log = logging.getLogger("kraken.admin")

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


@dataclass
class AdminCall:
    """One admin request as a route sees it."""

    req: Request
    sink: ResponseSink
    params: dict[str, str]
    actor: str
    max_body: int

    def body(self, allowed: tuple[str, ...]) -> dict[str, Any]:
        if len(self.req.body) > self.max_body:
            raise PayloadTooLarge(f"body: larger than {self.max_body} bytes")
        return json_object(self.req.body, allowed)

    def query(self, allowed: tuple[str, ...]) -> dict[str, str]:
        return query(self.req.target, allowed)


Handler = Callable[[AdminCall], Awaitable[tuple[int, Any] | None]]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    names: tuple[str, ...] = field(default=())


class AdminApp:
    """Dispatches admin requests; ``handle`` is what the listener calls."""

    def __init__(self, token_hash: str, *, max_body_bytes: int = 1024 * 1024):
        self._token_hash = token_hash
        self._max_body = max_body_bytes
        self._routes: list[_Route] = []
        self._public: dict[str, Handler] = {}

    def add_public(self, path: str, handler: Handler) -> None:
        """Serve ``GET path`` without the admin token: the usage page (kraken/admin/page.py),
        whose data routes check an API key or the admin token themselves."""
        self._public[path] = handler

    def add(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler`` for ``method path``; ``{name}`` segments become params."""
        names = tuple(re.findall(r"{(\w+)}", path))
        regex = re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", path)
        self._routes.append(_Route(method, re.compile(regex), handler, names))

    async def handle(self, req: Request, sink: ResponseSink) -> None:
        try:
            await self._dispatch(req, sink)
        except KrakenError as exc:
            if not sink.started:
                send_json_error(sink, exc)
            else:
                sink.abort()
        except StoreBusy:  # not a fault of Kraken's: one line, no traceback
            log.warning("admin request refused: the database is busy (another writer held it "
                        "past [store] busy_timeout_ms)")
            if not sink.started:
                send_json_error(sink, DatabaseBusy("the database is busy; retry shortly"))
            else:
                sink.abort()
        except Exception:
            log.exception("admin request failed")
            if not sink.started:
                send_json_error(sink, AdminInternalError("internal error"))
            else:
                sink.abort()

    async def _dispatch(self, req: Request, sink: ResponseSink) -> None:
        public = self._public.get(req.path)
        if public is not None:
            if req.method != "GET":
                raise AdminMethodNotAllowed("use GET for this path", allow="GET")
            result = await public(AdminCall(req, sink, {}, "public", self._max_body))
            if result is not None:
                send_json(sink, *result)
            return
        # Authentication first: an unauthenticated caller learns nothing, not even 404s.
        if not token_matches(bearer(req.header(b"authorization")), self._token_hash):
            raise unauthorized()
        actor = "api"
        named = req.header(b"x-kraken-actor")
        if named is not None:
            try:
                who = named.decode("ascii")
            except UnicodeDecodeError:
                who = ""
            if ID_RE.fullmatch(who) is None:
                raise AdminError("x-kraken-actor: must be an id of letters, digits and _.:-",
                                 param="x-kraken-actor")
            actor = f"api:{who}"
        path = req.path
        allowed: list[str] = []
        for route in self._routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if route.method != req.method:
                allowed.append(route.method)
                continue
            params = {k: path_segment(v) for k, v in m.groupdict().items()}
            call = AdminCall(req, sink, params, actor, self._max_body)
            result = await route.handler(call)
            if result is not None:
                status, payload = result
                send_json(sink, status, payload)
            return
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise AdminMethodNotAllowed(f"use {allow} for this path", allow=allow)
        raise AdminNotFound("no such admin path", param="path")


def send_json(sink: ResponseSink, status: int, payload: Any) -> None:
    body = b"" if status == 204 else orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    sink.respond(status, [_JSON, _NO_STORE], body)


def send_json_error(sink: ResponseSink, exc: KrakenError) -> None:
    sink.respond(exc.status, [_JSON, _NO_STORE, *exc.headers], OPENAI.render(exc))


class FlowGate:
    """Backpressure for streamed responses: the sink pauses it when the client lags."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    def pause_reading(self) -> None:
        self._open.clear()

    def resume_reading(self) -> None:
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()
