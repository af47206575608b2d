"""A metered endpoint as a value: what differs between endpoints, and nothing of the order.

The engine (``kraken.gateway.pipeline``) runs every metered call through the same phases,
identify → admit → limit → parse → check model → classify → route → dispatch → record; an
``Endpoint`` only says how its own request is read, classified, routed and shaped, and in which
wire format its errors are written (model: Pingora's ``ProxyHttp``, whose implementations
supply phase behaviour and never re-write the sequence). ``Parsed`` is what the phases after
parse see of one request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from kraken.errors import KrakenError, ModelNotFound
from kraken.http.exchange import Request
from kraken.providers.error_formats import OPENAI, ErrorFormat
from kraken.providers.family import ResponseFilter, UpstreamRequest

if TYPE_CHECKING:
    from kraken.gateway.call import Call
    from kraken.gateway.upload import UploadLimits
    from kraken.policy.router import Route, Router

__all__ = ["Endpoint", "LateTask", "Parsed", "asked_to_stream", "body_model", "model_not_served", "never"]


@dataclass(slots=True)  # not frozen: see kraken/http/exchange.py Request
class Parsed:
    """One request as the endpoint read it: the request, what its path says, its body."""

    req: Request
    payload: dict
    where: object = None
    """What ``Endpoint.locate`` read from the path (Gemini native: model, method, SSE)."""


def body_model(parsed: Parsed) -> str:
    """The model the body names (``parse`` made sure it is a non-empty string)."""
    return parsed.payload["model"]


def never(parsed: Parsed) -> bool:
    """An endpoint whose answers are never streamed."""
    return False


def model_not_served(why: str) -> Callable[[str], KrakenError]:
    """An endpoint's ``not_served``: 404 ``model_not_found``, the model named, then ``why``."""

    def not_served(model: str) -> KrakenError:
        return ModelNotFound(f"The model '{model[:200]}' {why}")

    return not_served


def asked_to_stream(parsed: Parsed) -> bool:
    """Streamed when the body says ``"stream": true`` (``parse`` made sure it is a boolean)."""
    return parsed.payload.get("stream") is True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One metered endpoint's behaviour in the shared phases."""

    path: str
    """Exact path, or a prefix ending in ``/*`` that serves everything under it."""
    route: str
    """The record's route name."""
    parse: Callable[[bytes], dict]
    """The body check: the payload, or a ``BadRequest`` naming the field."""
    task: Callable[[Parsed], str | None]
    """Classify: the record's task type (``kraken.policy.classify`` labels)."""
    shape: Callable[[Route, Parsed], UpstreamRequest]
    """The upstream request for one candidate route (its family reads the answer)."""
    errors: ErrorFormat = OPENAI
    """The wire format of every error answer and error event."""
    method: str | None = "POST"
    """Other methods get 405 before identify; None: the endpoint checks (``locate``)."""
    model: Callable[[Parsed], str] = body_model
    """The model asked for: checked against allow-lists, routed, recorded."""
    stream: Callable[[Parsed], bool] = never
    """Whether the answer is streamed (SSE)."""
    serves: Callable[[Route], bool] | None = None
    """Which of the model's routes can serve this endpoint; None: all of them."""
    not_served: Callable[[str], KrakenError] | None = None
    """The error when ``serves`` keeps none of the model's routes (given the model)."""
    response_filter: Callable[[Route, Parsed], ResponseFilter | None] | None = None
    """A fresh filter per attempt when the client's wire format is not the provider's."""
    credentials: Callable[[Request], Request] | None = None
    """The request as identify sees it (Gemini native: the key wherever Google's SDKs put it)."""
    locate: Callable[[Request], object] | None = None
    """After identify, before admit: what the path says (``Parsed.where``), or its 404/405."""
    request_id_header: bytes | None = None
    """A second name for ``x-request-id`` on answers (Anthropic's SDK reads ``request-id``)."""
    routes: Callable[[Router, Parsed], tuple[Route, ...]] | None = None
    """An endpoint not routed by model (files, batches) names its provider's route itself;
    ``model`` and the allow-lists are then not consulted."""
    read: Callable[[Request, UploadLimits], Awaitable[dict]] | None = None
    """Instead of ``parse``: read a streamed body (an upload) only as far as routing needs;
    the payload's ``kraken.gateway.upload.UPLOAD`` relays the rest (``Upload.relay``)."""
    around: Callable[..., Awaitable[None]] | None = None
    """Instead of the dispatch: ``(gateway, call, endpoint, routes, parsed, sink, later)``,
    which checks, then dispatches (files and batches: their owners, ``file_owners.guarded``)."""


class LateTask:
    """A call's task type, classified once, when nothing waits on it.

    Only ``auto`` routes by the task; for any other model the label is for the record alone,
    so the classifier (~15 µs) runs after the upstream request is written, while the provider
    works, instead of before it on the first byte's path; for a stream, with its record (in a
    burst, the provider's think time is other streams' first bytes). Calling it again does
    nothing."""

    __slots__ = ("_call", "_task", "_parsed")

    def __init__(self, call: Call, endpoint: Endpoint, parsed: Parsed):
        self._call, self._task, self._parsed = call, endpoint.task, parsed

    def __call__(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            self._call.task_type = task(self._parsed)
