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
``chunk_delay_ms`` (before each stream chunk), and the shared failure knobs of
``kraken.mock.server`` (``drop_after_chunks``: close after that many chunks, no terminating chunk).
"""
from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import parse_qs

import orjson

from kraken.mock.http1 import JSON, ParsedRequest
from kraken.mock.server import MockServer, Reply, load_body, mock_status, stream_reply

__all__ = ["STATUS_NAMES", "GeminiRequest", "MockGemini", "google_error"]

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


class MockGemini(MockServer):
    """A Gemini API HTTP/1.1 server on the running loop; ``requests``/``responses`` for asserts.

    ``responses`` holds (status, body bytes exactly as sent, de-chunked) per answered request.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 chunks: int = 5, prompt_tokens: int = 12):
        super().__init__(host, port, chunks=chunks, api_key=api_key)
        self.prompt_tokens = prompt_tokens

    @property
    def url(self) -> str:
        """The base URL an operator would configure (the OpenAI-compatible one, as in the preset)."""
        return self.origin + "/v1beta/openai"

    # -- provider hooks used by MockServer

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return google_error(status, message)

    def _next_id(self) -> bytes:
        self._ids += 1
        return b"mockresp%012d" % self._ids

    def _record_request(self, index: int, req: ParsedRequest, path: str) -> None:
        self.requests.append(GeminiRequest(req.method, req.target, list(req.headers), req.body))

    def _record(self, index: int, status: int, body: bytes) -> None:
        self.responses.append((status, body))

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        try:
            return self._generate(req, path)
        except _Fail as fail:
            return Reply(fail.status, google_error(fail.status, fail.message, fail.reason))

    def _generate(self, req: ParsedRequest, path: str) -> Reply:
        params = parse_qs(req.target.partition("?")[2])
        self._check_key(req, params)
        prefix = "/v1beta/models/"
        if not path.startswith(prefix) or ":" not in path:
            raise _Fail(404, f"Requested entity was not found. ({req.method} {path[:80]})")
        model, _, method = path[len(prefix):].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            raise _Fail(404, f"Method {method[:40]} not found for models/{model[:80]}.")
        if req.method != "POST":
            raise _Fail(404, "Requested entity was not found.")
        body, mock = load_body(req.body, "Invalid JSON payload received.",
                               "Invalid JSON payload received. Expected an object.")
        status = mock_status(mock)
        if status is not None:
            raise _Fail(status, f"Mock error {status}.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Fail(400, "* GenerateContentRequest.contents: contents is not specified")
        pieces = [f"tok{i} " for i in range(_count(mock, "chunks", self.chunks))] or [""]
        prompt = _count(mock, "prompt_tokens", self.prompt_tokens)
        cached = _count(mock, "cached_tokens", 0)
        thoughts = _count(mock, "thoughts_tokens", 0)
        rid = self._next_id().decode()
        if method == "generateContent":
            out = orjson.dumps(_chunk(model, rid, "".join(pieces),
                                      _usage(prompt, len(pieces), cached, thoughts), True))
            return Reply(200, out)
        chunks = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            usage = _usage(prompt, i + 1, cached if last else 0, thoughts if last else 0)
            chunks.append(orjson.dumps(_chunk(model, rid, piece, usage, last)))
        if params.get("alt") == ["sse"]:
            events = [b"data: " + c + b"\r\n\r\n" for c in chunks]
            ctype = b"text/event-stream"
        else:  # one JSON array, sent piece by piece
            events = [(b"[" if i == 0 else b",\r\n") + c for i, c in enumerate(chunks)]
            events[-1] += b"]"
            ctype = JSON
        return self._with_mock(mock, stream_reply(events, ctype=ctype))

    def _check_key(self, req: ParsedRequest, params: dict) -> None:
        if self.api_key is None:
            return
        got = next((v for k, v in req.headers if k == b"x-goog-api-key"), None)
        key = got.decode("latin-1") if got is not None else (params.get("key") or [None])[0]
        if key is None:
            raise _Fail(403, "Method doesn't allow unregistered callers (callers without "
                             "established identity). Please use API Key or other form of API "
                             "consumer identity to call this API.")
        if key != self.api_key:
            raise _Fail(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
