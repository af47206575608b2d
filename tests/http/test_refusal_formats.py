"""The transport's own refusals (413, 431, 408, a malformed head: answered before any handler
runs) come in the wire format of the request's path, like the gateway's errors: Anthropic's
under ``/v1/messages`` (as the real ``anthropic`` SDK reads it), Google's under ``/v1beta/``,
OpenAI's elsewhere and when the head shows no path. HTTP/1.1 and HTTP/2, through a real
Kraken in front of the mock providers."""
from __future__ import annotations

import asyncio
import contextlib
import json

import anthropic
import pytest
from h1wire import connect, is_openai_error, parse_responses, read_to_eof
from h2client import h2c
from harness import PROVIDER_KEY, TEST_KEY, http, kraken_mapping, running_kraken, running_mock

from kraken.mock.anthropic_mock import MockAnthropic

pytestmark = pytest.mark.anyio

MESSAGES = "/v1/messages"
GEMINI = "/v1beta/models/gemini-test:generateContent"
CHAT = "/v1/chat/completions"
MAX_BODY = 1000


@pytest.fixture
async def kraken(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        mock = await stack.enter_async_context(running_mock())
        claude = await stack.enter_async_context(MockAnthropic(api_key=PROVIDER_KEY))
        doc = kraken_mapping(tmp_path, mock.port, server={
            "max_body_bytes": MAX_BODY, "head_timeout_s": 0.3, "body_idle_timeout_s": 0.3})
        doc["providers"]["claude"] = {"kind": "anthropic", "base_url": claude.url,
                                      "api_key": PROVIDER_KEY, "models": ["claude-test"]}
        yield await stack.enter_async_context(running_kraken(doc))
        assert not mock.requests and not claude.requests, "a refusal reaches no provider"


def head(path: str, *lines: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: kraken\r\n" % path.encode() + b"".join(
        line + b"\r\n" for line in lines)


REFUSALS = {  # (what the client sends, its status)
    "body too large": (lambda p: head(p, b"Content-Length: 5000", b""), 413),
    "head too large": (lambda p: head(p, b"X-Big: " + b"a" * 17_000, b""), 431),
    "malformed head": (lambda p: head(p, b"X-Foo: a", b" folded", b"Content-Length: 0", b""), 400),
    "head too slow": (lambda p: head(p, b"Content-Length: 2"), 408),  # the head never ends
    "body too slow": (lambda p: head(p, b"Content-Length: 100", b"") + b"{", 408),
}
ANTHROPIC_TYPES = {413: "request_too_large", 431: "invalid_request_error",
                   400: "invalid_request_error", 408: "invalid_request_error"}
GOOGLE_STATUS = {413: "INVALID_ARGUMENT", 431: "INVALID_ARGUMENT", 400: "INVALID_ARGUMENT",
                 408: "DEADLINE_EXCEEDED"}


async def refused(port: int, raw: bytes):
    async with connect(port) as (reader, writer):
        writer.write(raw)
        (answer,) = parse_responses(await read_to_eof(reader, timeout=10))
    return answer


def anthropic_shaped(status: int, body: dict, headers: dict) -> None:
    assert body == {"type": "error", "error": {"type": ANTHROPIC_TYPES[status],
                                               "message": body["error"]["message"]}}
    assert headers["request-id"] == headers["x-request-id"]  # the SDK's exc.request_id


def google_shaped(status: int, body: dict, headers: dict) -> None:
    assert body == {"error": {"code": status, "message": body["error"]["message"],
                              "status": GOOGLE_STATUS[status]}}
    assert headers["content-type"] == "application/json; charset=UTF-8"


def text_headers(answer) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in answer.headers.items()}


SHAPES = {"messages_anthropic": (MESSAGES, anthropic_shaped),
          "v1beta_google": (GEMINI, google_shaped),
          "elsewhere_openai": (CHAT, None)}
"""Where a refusal's path points, and the format its answer must have there (None: OpenAI's)."""


@pytest.mark.parametrize("where", list(SHAPES))
@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_an_http1_refusal_follows_its_paths_format(kraken, refusal, where):
    raw, status = REFUSALS[refusal]
    path, shaped = SHAPES[where]
    answer = await refused(kraken.port, raw(path))
    if shaped is None:
        assert is_openai_error(answer, status)
        return
    assert answer.status == status
    shaped(status, answer.json(), text_headers(answer))


@pytest.mark.parametrize("raw", [
    b"POST\r\nHost: kraken\r\n\r\n",  # no target: the path is not known
    b"POST /v1/mess",  # the request line never ends (408)
])
async def test_a_head_that_shows_no_path_is_answered_openai_style(kraken, raw):
    answer = await refused(kraken.port, raw)
    assert answer.status in (400, 408) and is_openai_error(answer, answer.status)


async def test_the_anthropic_sdk_reads_a_413_under_messages(kraken):
    client = anthropic.AsyncAnthropic(base_url=kraken.base_url, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(anthropic.ContentTooLargeError) as too_large:
        await client.messages.create(model="claude-test", max_tokens=8,
                                     messages=[{"role": "user", "content": "x" * MAX_BODY}])
    assert too_large.value.type == "request_too_large"
    assert too_large.value.api_message == "request body too large"
    assert too_large.value.request_id.startswith("req_")


async def test_a_gemini_client_reads_a_413_under_v1beta(kraken):
    body = json.dumps({"contents": [{"parts": [{"text": "x" * MAX_BODY}]}]}).encode()
    answer = await http(kraken.port, "POST", GEMINI, body,
                        {"x-goog-api-key": TEST_KEY, "content-type": "application/json"})
    assert answer.status == 413
    google_shaped(413, answer.json(), answer.headers)


@pytest.mark.parametrize("path, shaped", [(MESSAGES, anthropic_shaped),
                                          (GEMINI, google_shaped)])
async def test_an_http2_refusal_follows_the_path_too(kraken, path, shaped):
    async with h2c(kraken.port) as client:
        answer = await client.request("POST", path, body=b"x" * (MAX_BODY + 1))
        big = await client.request("POST", path, headers={"x-big": "a" * 17_000})
    assert (answer.status, big.status) == (413, 431)
    shaped(413, json.loads(answer.body), answer.headers)
    shaped(431, json.loads(big.body), big.headers)


@pytest.mark.parametrize("path, shaped", [(MESSAGES, anthropic_shaped),
                                          (GEMINI, google_shaped)])
async def test_an_error_a_handler_lets_escape_follows_the_path(path, shaped):
    """The transport's last resort (a handler that raised instead of answering) speaks the
    path's format too, given the gateway's ``ErrorAnswers``."""
    from kraken.config import ServerConfig
    from kraken.errors import PayloadTooLarge
    from kraken.gateway.endpoints import ERROR_FORMATS
    from kraken.gateway.paths import Paths
    from kraken.http.h1 import H1Connection

    paths = Paths()
    for prefix, errors in ERROR_FORMATS:
        paths.add_error_format(prefix, errors)

    async def escapes(req, sink):
        raise PayloadTooLarge("too large for this handler")

    loop = asyncio.get_running_loop()
    conns: set = set()
    listener = await loop.create_server(
        lambda: H1Connection(escapes, ServerConfig(), conns, answers=paths.error_answer),
        "127.0.0.1", 0)
    try:
        answer = await refused(listener.sockets[0].getsockname()[1],
                               head(path, b"Connection: close", b"Content-Length: 0", b""))
    finally:
        listener.close()
        await listener.wait_closed()
    assert answer.status == 413
    shaped(413, answer.json(), text_headers(answer))
