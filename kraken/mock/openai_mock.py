"""A fast, deterministic OpenAI-compatible provider for tests, ``kraken serve --demo`` and the bench.

It is the latency floor in benchmarks: the wire work (parser, connections, failure knobs) is the
shared ``kraken.mock.server``; this module only decides bodies, built once per shape and cached
as wire bytes (only the completion id changes per request).
Content is fake ("tok0 tok1 ..."); the prompt is never echoed.

A ``"mock": {...}`` field in a JSON body steers that one request (Kraken forwards bodies, so tests
reach the mock through it): ``chunks`` (content pieces per choice), ``chunk_delay_ms``,
``first_byte_delay_ms``, ``status`` (answer with this error status, OpenAI error body),
``drop_after_chunks`` / ``hang_after_chunks`` (after that many SSE events, counting role, content,
finish and usage events: close with a bare FIN / stop sending but keep the socket open; on a
non-stream request: close / hang before answering), ``close_before_response``,
``close_after_response`` (the whole answer, then a FIN), ``content`` (exact text, split on
character boundaries), ``usage`` (prompt_tokens, completion_tokens, total_tokens, cached_tokens,
reasoning_tokens).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time
from typing import Any, NamedTuple

import orjson

from kraken.mock.http1 import ParsedRequest, ParseError, RequestParser
from kraken.mock.server import (
    BadRequest,
    MockRequest,
    MockResponse,
    MockServer,
    Reply,
    WireCache,
    checked_int,
    load_body,
    mock_status,
    stream_entry,
)

__all__ = ["MockOpenAI", "MockRequest", "MockResponse", "ParseError", "RequestParser", "main"]

log = logging.getLogger("kraken.mock")

MODELS = ("mock-gpt", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")

# Same length as a real id and as the ids we generate, so a cached stream's chunk sizes stay valid.
_ID_PLACEHOLDER = b"chatcmpl-" + b"@" * 28
_DONE = b"data: [DONE]\n\n"
_INT_MESSAGE = "Invalid value for '{name}': expected an integer in [{low}, {high}]."


# ----------------------------------------------------------------------------- response bodies (pure)

_ERROR_KIND = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    """OpenAI's error envelope; ``type``/``code`` follow what api.openai.com sends for the status."""
    etype, default_code = _ERROR_KIND.get(
        status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
    )
    return orjson.dumps(
        {"error": {"message": message, "type": etype, "param": param, "code": code or default_code}}
    )


def fake_value(schema: Any, i: int = 0, depth: int = 0) -> Any:
    """A deterministic value matching a JSON schema well enough for tools and json_schema."""
    if not isinstance(schema, dict) or depth > 6:
        return f"tok{i}"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return fake_value(schema[key][0], i, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: fake_value(v, j, depth + 1) for j, (k, v) in enumerate(props.items())}
    if kind == "array":
        return [fake_value(schema.get("items"), 0, depth + 1)]
    if kind == "integer":
        return i
    if kind == "number":
        return i + 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"tok{i}"


def split_text(text: str, parts: int) -> tuple[str, ...]:
    """``text`` cut into at most ``parts`` non-empty pieces on character (not byte) boundaries."""
    if not text:
        return ("",)
    parts = max(1, min(parts, len(text)))
    step, extra = divmod(len(text), parts)
    out, pos = [], 0
    for k in range(parts):
        size = step + (1 if k < extra else 0)
        out.append(text[pos : pos + size])
        pos += size
    return tuple(out)


_TOKENS: dict[int, tuple[str, ...]] = {}


def default_pieces(count: int) -> tuple[str, ...]:
    pieces = _TOKENS.get(count)
    if pieces is None:
        pieces = tuple(("tok%d" if k == 0 else " tok%d") % k for k in range(max(count, 0)))
        _TOKENS[count] = pieces
    return pieces


class ChatPlan(NamedTuple):
    """Everything that decides a chat response's bytes; hashable, so it keys the wire cache."""

    model: str
    stream: bool
    include_usage: bool
    n: int
    pieces: tuple[str, ...]  # content pieces, or tool-call argument pieces when ``tool`` is set
    tool: str | None  # function name
    finish: str
    usage: tuple[int, int, int, int, int]  # prompt, completion, total, cached, reasoning
    created: int


def _int(value: Any, name: str, low: int, high: int) -> int:
    return checked_int(value, name, low, high, _INT_MESSAGE)


def plan_chat(req: dict, mock: dict, chunks: int, prompt_tokens: int) -> ChatPlan:
    """Decide the response for one chat request (validation errors raise BadRequest)."""
    get = req.get
    model = get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    messages = get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array.", "messages")
    n = get("n")
    n = 1 if n is None else _int(n, "n", 1, 128)
    stream = get("stream") is True
    opts = get("stream_options")
    include_usage = stream and isinstance(opts, dict) and opts.get("include_usage") is True
    if mock and "chunks" in mock:
        chunks = _int(mock["chunks"], "mock.chunks", 0, 100_000)
    finish = "stop"
    tool = None
    tools = get("tools")
    rf = get("response_format")
    if tools and isinstance(tools, list) and get("tool_choice") != "none":
        tool, pieces = _tool_call(tools, get("tool_choice"), chunks)
        finish = "tool_calls"
    elif mock and isinstance(mock.get("content"), str):
        pieces = split_text(mock["content"], chunks)
    elif isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
        if rf["type"] == "json_schema":
            schema = (rf.get("json_schema") or {}).get("schema") or {"type": "object"}
            value = fake_value(schema)
        else:
            value = {"text": "".join(default_pieces(chunks))}
        pieces = split_text(orjson.dumps(value).decode(), chunks)
    else:
        limit = get("max_completion_tokens") or get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < chunks:
            chunks, finish = limit, "length"
        pieces = default_pieces(chunks)
    usage = _usage(mock.get("usage") if mock else None, prompt_tokens, len(pieces) * n)
    return ChatPlan(model, stream, include_usage, n, pieces, tool, finish, usage, int(time.time()))


def _tool_call(tools: list, choice: Any, chunks: int) -> tuple[str, tuple[str, ...]]:
    """The called function (``tool_choice`` if it names one, else the first) and its argument pieces."""
    fns = [t.get("function") or {} for t in tools if isinstance(t, dict)] or [{}]
    fn = fns[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        fn = next((f for f in fns if f.get("name") == wanted), fn)
    args = orjson.dumps(fake_value(fn.get("parameters") or {"type": "object"})).decode()
    return str(fn.get("name") or "tool"), split_text(args, chunks)


def _usage(over: Any, prompt: int, completion: int) -> tuple[int, int, int, int, int]:
    if not isinstance(over, dict):
        return (prompt, completion, prompt + completion, 0, 0)
    p = over.get("prompt_tokens", prompt)
    c = over.get("completion_tokens", completion)
    cached = over.get("cached_tokens", (over.get("prompt_tokens_details") or {}).get("cached_tokens", 0))
    reasoning = over.get(
        "reasoning_tokens", (over.get("completion_tokens_details") or {}).get("reasoning_tokens", 0))
    return (p, c, over.get("total_tokens", p + c), cached, reasoning)


def usage_dict(u: tuple[int, int, int, int, int]) -> dict:
    return {
        "prompt_tokens": u[0],
        "completion_tokens": u[1],
        "total_tokens": u[2],
        "prompt_tokens_details": {"cached_tokens": u[3]},
        "completion_tokens_details": {"reasoning_tokens": u[4]},
    }


def _call_id(choice: int) -> str:
    return f"call_mock{choice:015d}"


def build_completion(plan: ChatPlan) -> bytes:
    """A ``chat.completion`` object (id = placeholder)."""
    if plan.tool:
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": None}
    else:
        message = {"role": "assistant", "content": "".join(plan.pieces), "refusal": None}
    choices = []
    for i in range(plan.n):
        msg = dict(message)
        if plan.tool:
            msg["tool_calls"] = [{"id": _call_id(i), "type": "function",
                                  "function": {"name": plan.tool, "arguments": "".join(plan.pieces)}}]
        choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": plan.finish})
    return orjson.dumps({
        "id": _ID_PLACEHOLDER.decode(), "object": "chat.completion", "created": plan.created,
        "model": plan.model, "choices": choices, "usage": usage_dict(plan.usage),
        "system_fingerprint": "fp_mock",
    })


def build_stream(plan: ChatPlan) -> list[bytes]:
    """The SSE events (``data: ...\\n\\n``) of a stream.

    Order follows api.openai.com: a role delta per choice, content deltas interleaved by choice,
    a finish delta per choice, the usage chunk (``choices: []``) if asked, then ``[DONE]``.
    """
    head = {"id": _ID_PLACEHOLDER.decode(), "object": "chat.completion.chunk",
            "created": plan.created, "model": plan.model, "system_fingerprint": "fp_mock"}
    tail = {"usage": None} if plan.include_usage else {}

    def event(choices: list) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **tail}) + b"\n\n"

    def choice(i: int, delta: dict, finish: str | None = None) -> list:
        return [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]

    events = []
    for i in range(plan.n):
        if plan.tool:
            delta = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"index": 0, "id": _call_id(i), "type": "function",
                 "function": {"name": plan.tool, "arguments": ""}}]}
        else:
            delta = {"role": "assistant", "content": "", "refusal": None}
        events.append(event(choice(i, delta)))
    for piece in plan.pieces:
        for i in range(plan.n):
            if plan.tool:
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            else:
                delta = {"content": piece}
            events.append(event(choice(i, delta)))
    for i in range(plan.n):
        events.append(event(choice(i, {}, plan.finish)))
    if plan.include_usage:
        events.append(b"data: " + orjson.dumps(
            {**head, "choices": [], "usage": usage_dict(plan.usage)}) + b"\n\n")
    events.append(_DONE)
    return events


def build_embeddings(req: dict, prompt_tokens: int) -> bytes:
    """An embeddings list: deterministic vectors, float or base64 (float32 LE) like the real API."""
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    inputs = req.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'input' must be a non-empty string or array.", "input")
    dims = _int(req.get("dimensions") or 8, "dimensions", 1, 4096)
    b64 = req.get("encoding_format") == "base64"
    data = []
    for i in range(len(inputs)):
        vec = [round(((i * 31 + j * 7) % 100) / 100 - 0.5, 4) for j in range(dims)]
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    used = prompt_tokens * len(inputs)
    return orjson.dumps({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": used, "total_tokens": used}})


def _model(name: str) -> dict:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "kraken-mock"}


MODELS_BODY = orjson.dumps({"object": "list", "data": [_model(m) for m in MODELS]})


def _build(plan: ChatPlan) -> tuple:
    """A stream's ``stream_entry``, or ``(body,)``; both hold ``_ID_PLACEHOLDER`` where the id goes."""
    return stream_entry(build_stream(plan)) if plan.stream else (build_completion(plan),)


_MORE = {"/completions": "completions_reply", "/moderations": "moderations_reply",
         "/images/generations": "images_reply", "/rerank": "rerank_reply"}
"""Paths answered by ``kraken.mock.openai_more`` (name of its reply function)."""


# ----------------------------------------------------------------------------- server


class MockOpenAI(MockServer):
    """An OpenAI-compatible HTTP/1.1 server on the running event loop.

    ``requests``/``responses`` keep the last ``RECORD_MAX`` exchanges for assertions.
    """

    id_placeholder = _ID_PLACEHOLDER
    int_message = _INT_MESSAGE

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunks: int = 20,
                 chunk_delay_ms: float = 0.0, first_byte_delay_ms: float = 0.0,
                 prompt_tokens: int = 12, api_key: str | None = None):
        super().__init__(host, port, chunks=chunks, chunk_delay_ms=chunk_delay_ms,
                         first_byte_delay_ms=first_byte_delay_ms, api_key=api_key)
        self.prompt_tokens = prompt_tokens
        self.fail_status: int | None = None
        """When set, every chat completion is answered with this error status (fallback tests)."""
        self._auth = b"Bearer " + api_key.encode() if api_key else None
        self._also: set[bytes] = set()
        self._cache = WireCache(_build)
        self.files_api = None
        """Files and batches (``kraken.mock.openai_files.FilesApi``), made on first use."""

    @property
    def url(self) -> str:
        return self.origin + "/v1"

    def accept_key(self, api_key: str) -> None:
        """Also accept ``api_key`` (a customer's own key in BYOK tests); see ``requests``."""
        self._also.add(b"Bearer " + api_key.encode())

    # -- provider hooks used by MockServer

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return error_body(status, message, param)

    def _next_id(self) -> bytes:
        self._ids += 1
        return b"chatcmpl-%s%020d" % (self._id_prefix, self._ids)

    def _paced(self, reply: Reply, k: int, event: bytes) -> bool:
        """One delay per content round (n interleaved events); none before role, finish or usage."""
        first = reply.n
        return first <= k < first + reply.n * reply.rounds and (k - first) % reply.n == 0

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        if self._auth is not None:
            got = next((v for k, v in req.headers if k == b"authorization"), None)
            if got != self._auth and got not in self._also:
                return Reply(401, error_body(401, "Incorrect API key provided."))
        if path.startswith("/v1/"):
            path = path[3:]
        elif path.startswith("/compatibility/v1/"):  # Cohere's Compatibility API
            path = path[len("/compatibility/v1"):]
        elif path == "/v2/rerank" and req.method == "POST":  # Cohere's own rerank: its shape
            from kraken.mock import openai_more  # imports this module
            return openai_more.rerank_reply(self, req.body, shape="cohere")
        if path == "/chat/completions":
            if req.method != "POST":
                return Reply(405, error_body(405, f"Method {req.method} not allowed."))
            return self._chat(req.body)
        if path == "/responses" and req.method == "POST":
            from kraken.mock.openai_extras import responses_reply  # imports this module
            return responses_reply(self, req.body)
        if path.startswith(("/files", "/batches")):
            if self.files_api is None:
                from kraken.mock.openai_files import FilesApi  # imports this module
                self.files_api = FilesApi()
            return self.files_api.reply(req, path)
        if path.startswith("/audio/") and req.method == "POST":
            from kraken.mock.openai_audio import audio_reply  # imports the mock's server module
            return audio_reply(self, req, path)
        if path in _MORE and req.method == "POST":
            from kraken.mock import openai_more  # imports this module
            return getattr(openai_more, _MORE[path])(self, req.body)
        if path == "/embeddings":
            if req.method != "POST":
                return Reply(405, error_body(405, f"Method {req.method} not allowed."))
            body, mock = _load(req.body)
            reply = _mock_error(mock) or Reply(200, build_embeddings(body, self.prompt_tokens))
            return self._with_mock(mock, reply)
        if path == "/models" and req.method == "GET":
            return Reply(200, MODELS_BODY)
        if path.startswith("/models/") and req.method == "GET":
            name = path[len("/models/"):]
            if name in MODELS:
                return Reply(200, orjson.dumps(_model(name)))
            return Reply(404, error_body(404, "The model does not exist.", "model", "model_not_found"))
        return Reply(404, error_body(404, f"Invalid URL ({req.method} {path})."))

    def _chat(self, raw: bytes) -> Reply:
        body, mock = _load(raw)
        error = _mock_error({"status": self.fail_status} if self.fail_status else mock)
        if error is not None:
            return self._with_mock(mock, error)
        plan = plan_chat(body, mock, self.chunks, self.prompt_tokens)
        cached = self._cache.get(plan)
        rounds = len(plan.pieces)
        if plan.stream:
            reply = Reply(200, events=cached[0], framed=cached[1], n=plan.n, rounds=rounds,
                          whole=cached[2:])
        else:
            reply = Reply(200, cached[0].replace(_ID_PLACEHOLDER, self._next_id()), n=plan.n,
                          rounds=rounds)
        return self._with_mock(mock, reply)


def _mock_error(mock: dict) -> Reply | None:
    status = mock_status(mock)
    return None if status is None else Reply(status, error_body(status, f"Mock error {status}."))


def _load(raw: bytes) -> tuple[dict, dict]:
    return load_body(raw, "We could not parse the JSON body of your request.")


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m kraken.mock``: serve until SIGINT/SIGTERM, on uvloop."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python -m kraken.mock", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--first-byte-delay-ms", type=float, default=0.0)
    ap.add_argument("--prompt-tokens", type=int, default=12)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args(argv)

    async def serve() -> None:
        mock = MockOpenAI(args.host, args.port, chunks=args.chunks,
                          chunk_delay_ms=args.chunk_delay_ms,
                          first_byte_delay_ms=args.first_byte_delay_ms,
                          prompt_tokens=args.prompt_tokens, api_key=args.api_key)
        await mock.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("kraken-mock listening on %s", mock.url)
        await stop.wait()
        await mock.close()

    try:
        import uvloop
    except ImportError:  # still usable, just slower
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    return 0
