"""A fast, deterministic OpenAI-compatible provider for tests, ``kraken serve --demo`` and the bench.

It is the latency floor in benchmarks, so it avoids h11: a small incremental HTTP/1.1 parser,
responses built once per shape and cached as wire bytes (only the completion id changes per
request), and an ``asyncio.Protocol`` that writes a whole undelayed stream in one call.
Content is fake ("tok0 tok1 ..."); the prompt is never echoed.

A ``"mock": {...}`` field in a JSON body steers that one request (Kraken forwards bodies, so tests
reach the mock through it): ``chunks`` (content pieces per choice), ``chunk_delay_ms``,
``first_byte_delay_ms``, ``status`` (answer with this error status, OpenAI error body),
``drop_after_chunks`` / ``hang_after_chunks`` (after that many SSE events, counting role, content,
finish and usage events: close with a bare FIN / stop sending but keep the socket open; on a
non-stream request: close / hang before answering), ``close_before_response``, ``content``
(exact text, split on character boundaries), ``usage`` (prompt_tokens, completion_tokens,
total_tokens, cached_tokens, reasoning_tokens).
"""
from __future__ import annotations

import asyncio
import base64
import collections
import http
import secrets
import struct
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

__all__ = ["MockOpenAI", "MockRequest", "MockResponse", "ParseError", "RequestParser", "main"]

MODELS = ("mock-gpt", "gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
MAX_HEAD = 64 * 1024
MAX_BODY = 32 * 1024 * 1024
RECORD_MAX = 1000

# Same length as a real id and as the ids we generate, so a cached stream's chunk sizes stay valid.
_ID_PLACEHOLDER = b"chatcmpl-" + b"@" * 28
_DONE = b"data: [DONE]\n\n"


# ----------------------------------------------------------------------------- records
# NamedTuples, not frozen dataclasses: immutable all the same, and ~4x cheaper to build per request.


class MockRequest(NamedTuple):
    """One received request as the mock saw it; header names are lower-case bytes."""

    index: int
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return orjson.loads(self.body)


class MockResponse(NamedTuple):
    """The exact body bytes sent for request ``index`` (a stream de-chunked, cut where it was cut)."""

    index: int
    status: int
    body: bytes


# ----------------------------------------------------------------------------- HTTP/1.1 request parser


class ParseError(Exception):
    """Malformed request: answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ParsedRequest(NamedTuple):
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    http10: bool


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class RequestParser:
    """Bytes in, complete requests out; never touches a socket.

    h11 costs ~50-90 us per request head here (DECISIONS.md); this handles the subset a
    provider needs (Content-Length and chunked bodies, keep-alive, pipelining) in a few us.
    A request that arrives in one segment is parsed from that segment without copying it.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY):
        self.buf = b""
        self.pos = 0
        self.max_head = max_head
        self.max_body = max_body
        self.expect_continue = False  # set once when a head asks for "100 Continue"
        self._head: tuple | None = None
        self._length = 0  # Content-Length, or -1 for chunked
        self._parts: list[bytes] | None = None  # a long body, collected without quadratic copies
        self._have = 0
        self._chunks: list[bytes] = []
        self._chunked_size = 0

    @property
    def buffered(self) -> int:
        return len(self.buf) - self.pos + self._have

    def feed(self, data: bytes) -> None:
        if self._parts is not None:
            self._parts.append(data)
            self._have += len(data)
        elif self.pos >= len(self.buf):
            self.buf, self.pos = data, 0
        else:
            self.buf, self.pos = self.buf[self.pos :] + data, 0

    def next(self) -> ParsedRequest | None:
        """The next complete request, or None until more bytes arrive. Raises ParseError."""
        if self._head is None and not self._parse_head():
            return None
        length = self._length
        if length >= 0:
            if self._parts is not None:
                if self._have < length:
                    return None
                self.buf, self.pos = b"".join(self._parts), 0
                self._parts, self._have = None, 0
            pos = self.pos
            if len(self.buf) - pos < length:
                self._parts, self._have = [self.buf[pos:]], len(self.buf) - pos
                self.buf, self.pos = b"", 0
                return None
            body = self.buf[pos : pos + length]
            self.pos = pos + length
        else:
            body = self._parse_chunked()
            if body is None:
                return None
        method, target, headers, keep_alive, http10 = self._head
        self._head = None
        return ParsedRequest(method, target, headers, body, keep_alive, http10)

    def _parse_head(self) -> bool:
        buf, pos = self.buf, self.pos
        while buf.startswith(b"\r\n", pos):  # RFC 9112 2.2: ignore empty lines before a request
            pos += 2
        self.pos = pos
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0 or end - pos > self.max_head:
            if len(buf) - pos > self.max_head:
                raise ParseError(431, "Request header fields too large.")
            return False
        lines = buf[pos:end].split(b"\r\n")
        self.pos = end + 4
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            raise ParseError(400, "Malformed request line.")
        method, target, version = parts
        if version == b"HTTP/1.1":
            http10 = False
        elif version == b"HTTP/1.0":
            http10 = True
        else:
            raise ParseError(505, "HTTP version not supported.")
        headers = []
        length = None
        chunked = False
        conn = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or not _TOKEN.issuperset(name):
                raise ParseError(400, "Malformed header line.")
            name = name.lower()
            value = value.strip(b" \t")
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise ParseError(400, "Invalid Content-Length.")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise ParseError(501, "Unsupported Transfer-Encoding.")
                chunked = True
            elif name == b"connection":
                conn = value.lower()
            elif name == b"expect" and value.lower() == b"100-continue" and not http10:
                self.expect_continue = True
        if chunked and length is not None:
            raise ParseError(400, "Both Content-Length and Transfer-Encoding.")
        if (length or 0) > self.max_body:
            raise ParseError(413, "Request body too large.")
        keep_alive = (b"keep-alive" in conn) if http10 else (b"close" not in conn)
        self._length = -1 if chunked else (length or 0)
        self._chunks = []
        self._chunked_size = 0
        self._head = (method.decode("ascii"), target.decode("latin-1"), headers, keep_alive, http10)
        return True

    def _parse_chunked(self) -> bytes | None:
        buf = self.buf
        while True:
            pos = self.pos
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > 1024:
                    raise ParseError(400, "Malformed chunk size line.")
                return None
            size_text = buf[pos:eol].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ParseError(400, "Malformed chunk size line.") from None
            if size == 0:
                # last-chunk, optional trailers, then an empty line
                if buf.startswith(b"\r\n", eol + 2):
                    self.pos = eol + 4
                else:
                    end = buf.find(b"\r\n\r\n", eol)
                    if end < 0:
                        return None
                    self.pos = end + 4
                body = b"".join(self._chunks)
                self._chunks = []
                return body
            if len(buf) < eol + 2 + size + 2:
                return None
            if buf[eol + 2 + size : eol + 4 + size] != b"\r\n":
                raise ParseError(400, "Malformed chunk data.")
            self._chunked_size += size
            if self._chunked_size > self.max_body:
                raise ParseError(413, "Request body too large.")
            self._chunks.append(buf[eol + 2 : eol + 2 + size])
            self.pos = eol + 4 + size


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


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


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
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"Invalid value for '{name}': expected an integer in [{low}, {high}].", name)
    return value


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


# ----------------------------------------------------------------------------- wire framing


def status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


_HEAD_CACHE: dict[tuple, bytes] = {}


def response_head(status: int, ctype: bytes, length: int | None, close: bool, http10: bool) -> bytes:
    """Status line + headers; ``length=None`` means chunked (an HTTP/1.0 peer gets close-delimited)."""
    key = (status, ctype, length, close, http10)
    head = _HEAD_CACHE.get(key)
    if head is None:
        lines = [status_line(status), b"content-type: " + ctype + b"\r\n"]
        if length is not None:
            lines.append(b"content-length: %d\r\n" % length)
        elif not http10:
            lines.append(b"transfer-encoding: chunked\r\n")
        if length is None:
            lines.append(b"cache-control: no-cache\r\n")
        if status == 429:
            lines.append(b"retry-after: 1\r\n")
        if close:
            lines.append(b"connection: close\r\n")
        elif http10:
            lines.append(b"connection: keep-alive\r\n")
        head = b"".join(lines) + b"\r\n"
        if len(_HEAD_CACHE) > 4096:
            _HEAD_CACHE.clear()
        _HEAD_CACHE[key] = head
    return head


def frame(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


JSON = b"application/json"
SSE = b"text/event-stream; charset=utf-8"


# ----------------------------------------------------------------------------- replies


@dataclass(slots=True)
class Reply:
    """What to send for one request: a whole body, or stream events, plus failure-mode knobs."""

    status: int
    body: bytes = b""
    events: list[bytes] | None = None  # unframed SSE events; None = Content-Length body
    framed: list[bytes] | None = None  # the same events chunk-framed (cached with them)
    whole: tuple[bytes, bytes] | None = None  # (de-chunked body, chunked body) of a whole stream
    n: int = 1  # choices; a stream starts with one role event per choice
    rounds: int = 0  # content pieces per choice
    first_delay: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    hang_after: int | None = None
    close_now: bool = False

    @property
    def immediate(self) -> bool:
        return self.first_delay <= 0 and self.chunk_delay <= 0


class _Cache:
    """Wire bytes per ChatPlan; bounded because ``created`` makes keys change every second.

    A stream entry is (events, framed events, de-chunked body, whole chunked body); a completion
    entry is (body,). All contain ``_ID_PLACEHOLDER`` where the id goes.
    """

    def __init__(self, size: int = 512):
        self.size = size
        self.data: dict[ChatPlan, tuple] = {}

    def get(self, plan: ChatPlan) -> tuple:
        hit = self.data.get(plan)
        if hit is None:
            if plan.stream:
                events = build_stream(plan)
                framed = [frame(e) for e in events]
                hit = (events, framed, b"".join(events), b"".join(framed) + b"0\r\n\r\n")
            else:
                hit = (build_completion(plan),)
            if len(self.data) >= self.size:
                self.data.clear()
            self.data[plan] = hit
        return hit


# ----------------------------------------------------------------------------- connection


class _Conn(asyncio.Protocol):
    """One client connection: the only object here that touches a transport."""

    __slots__ = ("server", "transport", "parser", "busy", "task", "closed", "_drain")

    def __init__(self, server: MockOpenAI):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser()
        self.busy = False
        self.task: asyncio.Task | None = None
        self.closed: asyncio.Future | None = None
        self._drain: asyncio.Future | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.closed = asyncio.get_running_loop().create_future()
        self.server._conns.add(self)

    def connection_lost(self, exc):
        self.server._conns.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.task is not None:
            self.task.cancel()
        self.transport = None

    def pause_writing(self):
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data):
        self.parser.feed(data)
        if self.parser.buffered > MAX_HEAD + MAX_BODY:
            self.transport.pause_reading()
        if not self.busy:
            self._process()

    def _process(self):
        while self.transport is not None and not self.transport.is_closing():
            try:
                req = self.parser.next()
            except ParseError as e:
                body = error_body(e.status, e.message)
                self.transport.write(response_head(e.status, JSON, len(body), True, False) + body)
                self.transport.close()
                return
            if req is None:
                if self.parser.expect_continue:
                    self.parser.expect_continue = False
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            self.parser.expect_continue = False
            index, reply = self.server._handle(req)
            if reply.close_now:
                self.server._record(index, 0, b"")
                self.transport.abort()
                return
            if reply.immediate and reply.hang_after is None:
                self._send_now(index, req, reply)
            else:
                self.busy = True
                self.task = asyncio.ensure_future(self._send_later(index, req, reply))
                return

    def _send_now(self, index: int, req: ParsedRequest, reply: Reply) -> None:
        close = not req.keep_alive
        if reply.events is None:
            if reply.drop_after is not None:  # a non-stream body cut before it starts
                self.server._record(index, reply.status, b"")
                self.transport.close()
                return
            head = response_head(reply.status, JSON, len(reply.body), close, req.http10)
            self.transport.write(head + reply.body)
            self.server._record(index, reply.status, reply.body)
        else:
            close = close or req.http10
            cid = self.server._next_id()
            head = response_head(reply.status, SSE, None, close, req.http10)
            cut = reply.drop_after
            if cut is not None and cut < len(reply.events):  # dropped: no last-chunk, just a FIN
                body = b"".join(reply.events[:cut])
                wire = body if req.http10 else b"".join(reply.framed[:cut])
                close = True
            else:
                body, wire = reply.whole
                if req.http10:
                    wire = body
            self.transport.write(head + wire.replace(_ID_PLACEHOLDER, cid))
            self.server._record(index, reply.status, body.replace(_ID_PLACEHOLDER, cid))
        if close:
            self.transport.close()

    async def _send_later(self, index: int, req: ParsedRequest, reply: Reply) -> None:
        """Delayed, dropped or hung responses: one event at a time, honouring pause_writing."""
        sent: list[bytes] = []
        record = reply.events is not None
        try:
            if reply.first_delay > 0:
                await asyncio.sleep(reply.first_delay)
            if reply.events is None:
                if reply.chunk_delay > 0:  # a whole completion takes as long as its stream would
                    await asyncio.sleep(reply.chunk_delay * reply.rounds)
                if reply.hang_after is not None:
                    await self.closed
                elif self.transport is not None:
                    self._send_now(index, req, reply)
                return
            events = reply.events
            limits = [x for x in (reply.drop_after, reply.hang_after) if x is not None]
            stop = min([len(events), *limits])
            hang = reply.hang_after is not None and stop == reply.hang_after
            close = not req.keep_alive or req.http10
            cid = self.server._next_id()
            pending = response_head(reply.status, SSE, None, close, req.http10)
            close = close or stop < len(events)  # a drop is a bare FIN, not announced
            first_content, end_content = reply.n, reply.n + reply.n * reply.rounds
            for k in range(stop):
                # one delay per content round (n interleaved events); none before finish/[DONE]
                if first_content <= k < end_content and (k - first_content) % reply.n == 0:
                    if reply.chunk_delay > 0:
                        await asyncio.sleep(reply.chunk_delay)
                if self._drain is not None and not self._drain.done():
                    await self._drain
                if self.transport is None:
                    return
                ev = events[k].replace(_ID_PLACEHOLDER, cid)
                sent.append(ev)
                self.transport.write(pending + (ev if req.http10 else frame(ev)))
                pending = b""
            if pending:
                self.transport.write(pending)
            if hang:
                self.server._record(index, reply.status, b"".join(sent))
                record = False
                await self.closed
                return
            if stop == len(events) and not req.http10:
                self.transport.write(b"0\r\n\r\n")
            if close:
                self.transport.close()
        except asyncio.CancelledError:
            pass  # the connection or the server closed
        finally:
            if record:
                self.server._record(index, reply.status, b"".join(sent))
            self.task = None
            self.busy = False
            if self.transport is not None and not self.transport.is_closing():
                self._process()


# ----------------------------------------------------------------------------- server


class MockOpenAI:
    """An OpenAI-compatible HTTP/1.1 server on the running event loop.

    ``requests``/``responses`` keep the last ``RECORD_MAX`` exchanges for assertions.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, chunks: int = 20,
                 chunk_delay_ms: float = 0.0, first_byte_delay_ms: float = 0.0,
                 prompt_tokens: int = 12, api_key: str | None = None):
        self.host = host
        self.port = port
        self.chunks = chunks
        self.chunk_delay_ms = chunk_delay_ms
        self.first_byte_delay_ms = first_byte_delay_ms
        self.prompt_tokens = prompt_tokens
        self.api_key = api_key
        self.fail_status: int | None = None
        """When set, every chat completion is answered with this error status (fallback tests)."""
        self.requests: collections.deque[MockRequest] = collections.deque(maxlen=RECORD_MAX)
        self.responses: collections.deque[MockResponse] = collections.deque(maxlen=RECORD_MAX)
        self._auth = b"Bearer " + api_key.encode() if api_key else None
        self._also: set[bytes] = set()
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._cache = _Cache()
        self._count = 0
        self._ids = 0
        self._id_prefix = secrets.token_hex(4)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def accept_key(self, api_key: str) -> None:
        """Also accept ``api_key`` (a customer's own key in BYOK tests); see ``requests``."""
        self._also.add(b"Bearer " + api_key.encode())

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), self.host, self.port, backlog=2048, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the last connection_lost callbacks run

    async def __aenter__(self) -> MockOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- internals used by _Conn

    def _next_id(self) -> bytes:
        self._ids += 1
        return b"chatcmpl-%s%020d" % (self._id_prefix.encode(), self._ids)

    def _record(self, index: int, status: int, body: bytes) -> None:
        self.responses.append(MockResponse(index, status, body))

    def _handle(self, req: ParsedRequest) -> tuple[int, Reply]:
        index = self._count
        self._count += 1
        path = req.target.split("?", 1)[0]
        self.requests.append(MockRequest(index, req.method, path, req.headers, req.body))
        try:
            return index, self._route(req, path)
        except BadRequest as e:
            return index, Reply(400, error_body(400, e.message, e.param))

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        if self._auth is not None:
            got = next((v for k, v in req.headers if k == b"authorization"), None)
            if got != self._auth and got not in self._also:
                return Reply(401, error_body(401, "Incorrect API key provided."))
        if path.startswith("/v1/"):
            path = path[3:]
        if path == "/chat/completions":
            if req.method != "POST":
                return Reply(405, error_body(405, f"Method {req.method} not allowed."))
            return self._chat(req.body)
        if path == "/responses" and req.method == "POST":
            from kraken.mock.openai_extras import responses_reply  # imports this module
            return responses_reply(self, req.body)
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

    def _with_mock(self, mock: dict, reply: Reply) -> Reply:
        if not mock:
            reply.first_delay = self.first_byte_delay_ms / 1000
            reply.chunk_delay = self.chunk_delay_ms / 1000
            return reply
        reply.first_delay = float(mock.get("first_byte_delay_ms", self.first_byte_delay_ms)) / 1000
        reply.chunk_delay = float(mock.get("chunk_delay_ms", self.chunk_delay_ms)) / 1000
        reply.drop_after = _opt_int(mock, "drop_after_chunks")
        reply.hang_after = _opt_int(mock, "hang_after_chunks")
        reply.close_now = mock.get("close_before_response") is True
        return reply


def _opt_int(mock: dict, key: str) -> int | None:
    value = mock.get(key)
    if value is None:
        return None
    return _int(value, f"mock.{key}", 0, 10_000_000)


def _mock_error(mock: dict) -> Reply | None:
    status = mock.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return Reply(status, error_body(status, f"Mock error {status}."))
    return None


_NO_MOCK: dict = {}


def _load(raw: bytes) -> tuple[dict, dict]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    mock = body.get("mock")
    return body, mock if isinstance(mock, dict) else _NO_MOCK


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m kraken.mock``: serve until SIGINT/SIGTERM, on uvloop."""
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
        print(f"kraken-mock listening on {mock.url}", flush=True)
        await stop.wait()
        await mock.close()

    try:
        import uvloop
    except ImportError:  # still usable, just slower
        asyncio.run(serve())
    else:
        uvloop.run(serve())
    return 0
