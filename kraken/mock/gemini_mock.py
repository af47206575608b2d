"""A deterministic Gemini API provider (``generativelanguage.googleapis.com``) for tests.

Speaks the native wire format from Google's API reference: ``POST
/v1beta/models/{model}:generateContent`` answers one ``GenerateContentResponse``;
``:streamGenerateContent?alt=sse`` answers SSE events ``data: {GenerateContentResponse}``
separated by CRLF blank lines, as Google sends them; without ``alt=sse`` the stream is one
JSON array sent piece by piece. Every response carries ``usageMetadata`` (``promptTokenCount``,
``candidatesTokenCount``, ``totalTokenCount`` and, when set, ``cachedContentTokenCount`` and
``thoughtsTokenCount``); in a stream each chunk has the counts so far. Errors are
``{"error":{"code":..,"message":..,"status":..}}``. The key is checked like Google does
(``x-goog-api-key`` header or ``key=`` query); every request line is recorded so a test can
prove no key ever travelled in a URL. Content is fake ("tok0 tok1 ..."), never the prompt.

A ``"mock": {...}`` field in the body steers one request: ``status`` (answer that error),
``chunks`` (text pieces), ``prompt_tokens``, ``cached_tokens``, ``thoughts_tokens``,
``chunk_delay_ms`` (before each stream chunk), ``drop_after_chunks`` (close the connection
after that many chunks, no terminating chunk).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import http
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import orjson

from kraken.mock.openai_mock import ParseError, RequestParser

__all__ = ["STATUS_NAMES", "GeminiRequest", "MockGemini", "google_error"]

RECORD_MAX = 1000
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


class GeminiRequest(NamedTuple):
    """One received request; ``target`` is the request line's target, query included."""

    method: str
    target: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target}"


def google_error(status: int, message: str, reason: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message,
                             "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if reason:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                             "domain": "googleapis.com",
                             "metadata": {"service": "generativelanguage.googleapis.com"}}]
    return orjson.dumps({"error": error})


class _Fail(Exception):
    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def _count(mock: dict, key: str, default: int) -> int:
    value = mock.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000_000:
        raise _Fail(400, f"mock.{key} must be a non-negative integer")
    return value


def _usage(prompt: int, candidates: int, cached: int, thoughts: int) -> dict:
    usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if cached:
        usage["cachedContentTokenCount"] = cached
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = prompt + candidates + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def _chunk(model: str, rid: str, text: str, usage: dict, finish: bool) -> dict:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = "STOP"
    candidate["index"] = 0
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": rid}


class MockGemini:
    """A Gemini API HTTP/1.1 server on the running loop; ``requests``/``responses`` for asserts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 chunks: int = 5, prompt_tokens: int = 12):
        self.host, self.port = host, port
        self.api_key = api_key
        self.chunks = chunks
        self.prompt_tokens = prompt_tokens
        self.requests: collections.deque[GeminiRequest] = collections.deque(maxlen=RECORD_MAX)
        self.responses: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=RECORD_MAX)
        """(status, body bytes exactly as sent, de-chunked) per answered request."""
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ids = 0

    @property
    def url(self) -> str:
        """The base URL an operator would configure (the OpenAI-compatible one, as in the preset)."""
        return f"http://{self.host}:{self.port}/v1beta/openai"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MockGemini:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- connection ------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        parser = RequestParser()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                parser.feed(data)
                while (req := parser.next()) is not None:
                    if not await self._answer(req, writer) or not req.keep_alive:
                        return
        except ParseError as exc:
            writer.write(_head(exc.status, b"application/json", len(body := google_error(
                exc.status, exc.message))) + body)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, req: Any, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must close (a dropped stream)."""
        self.requests.append(GeminiRequest(req.method, req.target, list(req.headers), req.body))
        try:
            return await self._route(req, writer)
        except _Fail as fail:
            body = google_error(fail.status, fail.message, fail.reason)
            writer.write(_head(fail.status, b"application/json", len(body)) + body)
            self.responses.append((fail.status, body))
            return True

    async def _route(self, req: Any, writer: asyncio.StreamWriter) -> bool:
        path, _, query = req.target.partition("?")
        params = parse_qs(query)
        self._check_key(req, params)
        prefix = "/v1beta/models/"
        if not path.startswith(prefix) or ":" not in path:
            raise _Fail(404, f"Requested entity was not found. ({req.method} {path[:80]})")
        model, _, method = path[len(prefix):].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise _Fail(404, f"Method {method[:40]} not found for models/{model[:80]}.")
        if req.method != "POST":
            raise _Fail(404, "Requested entity was not found.")
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            raise _Fail(400, "Invalid JSON payload received.") from None
        if not isinstance(body, dict):
            raise _Fail(400, "Invalid JSON payload received. Expected an object.")
        mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        status = mock.get("status")
        if isinstance(status, int) and 400 <= status <= 599:
            raise _Fail(status, f"Mock error {status}.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Fail(400, "* GenerateContentRequest.contents: contents is not specified")
        pieces = [f"tok{i} " for i in range(_count(mock, "chunks", self.chunks))] or [""]
        prompt = _count(mock, "prompt_tokens", self.prompt_tokens)
        cached = _count(mock, "cached_tokens", 0)
        thoughts = _count(mock, "thoughts_tokens", 0)
        self._ids += 1
        rid = f"mockresp{self._ids:012d}"
        if method == "generateContent":
            out = orjson.dumps(_chunk(model, rid, "".join(pieces),
                                      _usage(prompt, len(pieces), cached, thoughts), True))
            writer.write(_head(200, b"application/json", len(out)) + out)
            self.responses.append((200, out))
            return True
        sse = params.get("alt") == ["sse"]
        chunks = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            usage = _usage(prompt, i + 1, cached if last else 0, thoughts if last else 0)
            chunks.append(orjson.dumps(_chunk(model, rid, piece, usage, last)))
        if sse:
            events = [b"data: " + c + b"\r\n\r\n" for c in chunks]
        else:
            events = [(b"[" if i == 0 else b",\r\n") + c for i, c in enumerate(chunks)]
            events[-1] += b"]"
        delay = float(mock.get("chunk_delay_ms", 0)) / 1000
        drop = mock.get("drop_after_chunks")
        writer.write(_head(200, b"text/event-stream" if sse else b"application/json", None))
        sent = []
        for i, event in enumerate(events):
            if isinstance(drop, int) and i >= drop:
                self.responses.append((200, b"".join(sent)))
                await writer.drain()
                writer.transport.abort()
                return False
            if delay:
                await asyncio.sleep(delay)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            sent.append(event)
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        self.responses.append((200, b"".join(sent)))
        return True

    def _check_key(self, req: Any, params: dict) -> None:
        if self.api_key is None:
            return
        got = req.header(b"x-goog-api-key") if hasattr(req, "header") else None
        if got is None:
            got = next((v for k, v in req.headers if k == b"x-goog-api-key"), None)
        key = got.decode("latin-1") if got is not None else (params.get("key") or [None])[0]
        if key is None:
            raise _Fail(403, "Method doesn't allow unregistered callers (callers without "
                             "established identity). Please use API Key or other form of API "
                             "consumer identity to call this API.")
        if key != self.api_key:
            raise _Fail(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")


def _head(status: int, ctype: bytes, length: int | None) -> bytes:
    phrase = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else "Error"
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode()), b"content-type: " + ctype + b"\r\n"]
    if length is None:
        lines.append(b"transfer-encoding: chunked\r\n")
    else:
        lines.append(b"content-length: %d\r\n" % length)
    lines.append(b"server: scaffolding on HTTPServer2\r\n")
    return b"".join(lines) + b"\r\n"
