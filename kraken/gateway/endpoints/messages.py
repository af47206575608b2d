"""Claude through Kraken: the native ``POST /v1/messages`` endpoint and the OpenAI-format bridge.

``/v1/messages`` runs the shared call lifecycle (authenticate → admit → limit → parse → route →
dispatch → relay → record) with Anthropic's request checks and error format; the provider's
answer is relayed byte for byte (the relay only taps ``message_start``/``message_delta`` for
usage). Only routes whose provider speaks Anthropic's format are tried. Every error under
``/v1/messages`` (404 and 405 included) is in Anthropic's shape.

``/v1/messages/count_tokens`` (the SDK's ``messages.count_tokens``) runs the same lifecycle and
is relayed the same way. Anthropic does not bill token counting, so its record carries no
tokens and no cost, but it is a record like any admitted call (task type ``count_tokens``):
it is rate-limited, allow-listed and shows in usage as a request.

``chat_shape`` is how ``/v1/chat/completions`` reaches an Anthropic provider: the request is
translated (``kraken.providers.anthropic_translate``) and ``ChatOverAnthropic`` stands between
the relay and the client, re-encoding the answer as OpenAI's (``anthropic_answer``; the
translate module says why this path cannot relay bytes).
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

from kraken import metrics
from kraken.errors import InvalidValue, KrakenError, ModelNotFound, UpstreamError, UpstreamStatus
from kraken.gateway.body import boolean, nonempty_array, with_model
from kraken.gateway.call import Call
from kraken.policy.classify import task_type
from kraken.http.exchange import FlowControl, Request, ResponseSink
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.anthropic_answer import (
    ChunkTranslator,
    completion_from_message,
    openai_error_from_anthropic,
)
from kraken.providers.anthropic_translate import chat_to_messages, wants_usage_chunk
from kraken.providers.error_formats import ANTHROPIC, OPENAI

if TYPE_CHECKING:
    from kraken.gateway.pipeline import Gateway
    from kraken.policy.router import Route

__all__ = ["ChatOverAnthropic", "chat_shape", "register"]

PATH = "/v1/messages"
COUNT_TOKENS = "count_tokens"
MAX_TRANSLATED_BODY = 8 * 1024 * 1024
"""A non-streamed Message is held (up to this bound) to be rewritten as a chat.completion."""
_MOCK_KINDS = ("mock_anthropic",)
"""Provider kinds that are Kraken's local mock: the request's ``mock`` steering field is kept."""


def register(gateway: Gateway) -> None:
    """Serve ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` on ``gateway``;
    anything else under ``/v1/messages`` gets Anthropic's 404 or 405."""
    gateway.add_call(PATH, "messages", partial(_anthropic_call, gateway, parse_messages, ""),
                     ANTHROPIC)
    gateway.add_call(PATH + "/" + COUNT_TOKENS, "messages_count_tokens",
                     partial(_anthropic_call, gateway, parse_count_tokens, "/" + COUNT_TOKENS),
                     ANTHROPIC)
    gateway.add_error_format(PATH, ANTHROPIC)


async def _anthropic_call(gateway: Gateway, parse: Callable[[bytes], dict], suffix: str,
                          call: Call, req: Request, sink: ResponseSink) -> None:
    """A Messages API call relayed to an Anthropic provider, at ``PATH + suffix`` there too."""
    _, payload = await gateway.begin(call, req, parse)
    # Anthropic's SDK reads ``request-id`` (its ``_request_id``); Kraken's id stands in for it.
    call.response_headers = [*call.response_headers, (b"request-id", call.request_id.encode())]
    if suffix:  # a token count: one JSON answer, no model call
        call.task_type = COUNT_TOKENS
    else:
        call.stream = payload.get("stream") is True
        call.task_type = task_type("messages", payload)
    model = payload["model"]
    routes = gateway.routes_for(
        call, model, speaks_anthropic,
        lambda: ModelNotFound(f"The model '{model[:200]}' is not served by an Anthropic "
                              "provider here"))
    headers = req.headers

    def shape(route: Route, body: dict, out: ResponseSink):
        family = route.provider.family
        target, *request = family.messages_request(body, route.model, headers)
        return family, out, (target + suffix, *request)

    await gateway.dispatch(call, routes, payload, sink, shape=shape)


def parse_messages(raw: bytes) -> dict:
    """The fields Kraken needs from a Messages request; the rest is the provider's to check."""
    payload = parse_count_tokens(raw)
    max_tokens = payload.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidValue("max_tokens: Field required (a positive integer)")
    boolean(payload, "stream", "stream: must be a boolean")
    return payload


def parse_count_tokens(raw: bytes) -> dict:
    """A token count needs what a message needs, less ``max_tokens`` (and it never streams)."""
    payload = with_model(raw, "model: Field required (a string)")
    nonempty_array(payload, "messages", "messages: must be a non-empty array")
    return payload


def speaks_anthropic(route: Route) -> bool:
    """Whether ``route``'s provider speaks Anthropic's format (``/v1/messages`` tries only these)."""
    return isinstance(route.provider.family, AnthropicFamily)


# ---- /v1/chat/completions to an Anthropic provider ----------------------------------------------


def chat_shape(route: Route, payload: dict, sink: ResponseSink):
    """(relay family, response sink, upstream request) for one chat-completions attempt."""
    family = route.provider.family
    if not isinstance(family, AnthropicFamily):
        return family, sink, family.chat_request(payload, route.model)
    bridge = ChatOverAnthropic(family, sink, stream=payload.get("stream") is True,
                               include_usage=wants_usage_chunk(payload))
    return bridge, bridge, bridge.request(payload, route.model)


class ChatOverAnthropic:
    """The relay's family and sink for one OpenAI-format call answered by an Anthropic provider.

    As a family it shapes the translated request, reads Anthropic usage (the relay's tap sees the
    provider's bytes before they are translated) and turns provider errors into OpenAI's shape.
    As a sink it translates what the relay writes: SSE events one by one as they arrive, or a
    whole Message (held, bounded) rewritten at the end. Backpressure and the client's state are
    the real sink's.
    """

    __slots__ = (
        "_body",
        "_head",
        "_overflow",
        "_sink",
        "_stream",
        "_translator",
        "cfg",
        "family",
        "name",
    )

    def __init__(self, family: AnthropicFamily, sink: ResponseSink, *, stream: bool,
                 include_usage: bool):
        self.family = family
        self.cfg = family.cfg
        self.name = family.name
        self._sink = sink
        self._stream = stream
        self._translator = ChunkTranslator(include_usage=include_usage) if stream else None
        self._body = bytearray()
        self._head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._overflow = False

    # ---- family ------------------------------------------------------------------------------
    def request(self, payload: dict, model: str):
        passthrough = ("mock",) if self.cfg.kind in _MOCK_KINDS else ()
        body = chat_to_messages(payload, model, passthrough=passthrough)
        target, headers, data, _ = self.family.messages_request(body, model)
        return target, headers, data, False

    def usage_parser(self):
        return self.family.usage_parser()

    def usage_from_body(self, body: bytes):
        return self.family.usage_from_body(body)

    def map_error(self, status: int, body: bytes) -> KrakenError:
        err = self.family.map_error(status, body)
        if isinstance(err, UpstreamStatus):  # the provider's own 4xx, re-said in OpenAI's shape
            return UpstreamStatus(err.status, openai_error_from_anthropic(status, err.body, err))
        return err

    def sse_error_event(self, exc: KrakenError) -> bytes:
        """Writes OpenAI's error event to the client itself and returns nothing for the relay
        to write: the relay's bytes go through the translator, which this event must not."""
        assert self._translator is not None
        self._sink.write(self._translator.fail(exc))
        return b""

    # ---- sink --------------------------------------------------------------------------------
    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        if self._stream:
            self._sink.start(status, headers, None)
        else:
            self._head = (status, [(k, v) for k, v in headers if k != b"content-type"])

    def write(self, data: bytes) -> None:
        translator = self._translator
        if translator is not None:
            was_done = translator.done
            out = translator.feed(data)
            if out:
                self._sink.write(out)
            if translator.overflowed and not was_done:
                metrics.TRANSLATION_FAILURES.labels("event_too_large").inc()
        elif len(self._body) + len(data) <= MAX_TRANSLATED_BODY:
            self._body += data
        else:
            self._overflow = True

    def end(self) -> None:
        if self._translator is not None:
            tail = self._translator.finish()
            if tail:
                self._sink.write(tail)
            self._sink.end()
            return
        raw = bytes(self._body)
        body = None if self._overflow else completion_from_message(
            raw, self.family.usage_from_body(raw))
        status, headers = self._head or (200, [])
        if body is None:
            metrics.TRANSLATION_FAILURES.labels(
                "body_too_large" if self._overflow else "untranslatable").inc()
            err = UpstreamError("provider answer could not be translated")
            status, body = err.status, OPENAI.render(err)
        self._sink.respond(status, [(b"content-type", b"application/json"), *headers], body)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer is translated like any other: head, body, end."""
        self.start(status, headers, len(body))
        self.write(body)
        self.end()

    def abort(self) -> None:
        self._sink.abort()

    def cork(self) -> None:
        self._sink.cork()

    def flush(self) -> None:
        self._sink.flush()

    def set_producer(self, producer: FlowControl | None) -> None:
        self._sink.set_producer(producer)

    @property
    def started(self) -> bool:
        return self._sink.started

    @property
    def disconnected(self) -> bool:
        return self._sink.disconnected
