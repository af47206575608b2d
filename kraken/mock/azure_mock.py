"""A local Azure OpenAI resource: Azure's URL shape, auth and error bodies around OpenAI's answers.

From Azure OpenAI's data-plane REST reference: ``POST /openai/deployments/{deployment}/
chat/completions|completions|embeddings?api-version=...``, the key in an ``api-key`` header
(or an Entra ID token as ``Authorization: Bearer``). Answers are OpenAI's (built by
``kraken.mock.openai_mock``) with ``model`` set to the deployment's model, and a stream opens
with Azure's ``prompt_filter_results`` chunk (``choices: []``, no usage). Errors use Azure's
envelope (``code`` and ``message``, no ``type``): 401 for a wrong key, 404 for an unknown
deployment or path, 400 without ``api-version``, and the content filter's 400 when the body
asks with ``"mock": {"content_filter": "prompt"}``; ``"completion"`` instead ends the stream
(or answer) with ``finish_reason: "content_filter"``.

``requests`` record the full target (query included) as ``path``.
"""
from __future__ import annotations

from typing import Mapping

import orjson

from kraken.mock.http1 import ParsedRequest
from kraken.mock.openai_mock import (
    _ID_PLACEHOLDER, _INT_MESSAGE, ChatPlan, build_completion, build_embeddings, build_stream,
    plan_chat,
)
from kraken.mock.server import (
    MockRequest, MockServer, Reply, WireCache, load_body, mock_status, stream_entry,
)

__all__ = ["CONTENT_FILTER_RESULT", "MockAzureOpenAI", "azure_error"]

_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER_RESULT = {
    "hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE,
    "violence": {"filtered": True, "severity": "high"},
    "jailbreak": {"filtered": False, "detected": False},
}
"""What Azure reports per category; a refusal names the category that filtered."""
_FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766")
_PROMPT_FILTER = b"data: " + orjson.dumps({
    "choices": [], "created": 0, "id": "", "model": "", "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
        k: _SAFE for k in ("hate", "self_harm", "sexual", "violence")}}]}) + b"\n\n"
_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings")


def azure_error(code: str, message: str, **extra: object) -> bytes:
    """Azure's error envelope."""
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})


def _content_filter_refusal() -> bytes:
    return orjson.dumps({"error": {
        "message": _FILTER_MESSAGE, "type": None, "param": "prompt", "code": "content_filter",
        "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                      "content_filter_result": CONTENT_FILTER_RESULT}}})


def _build(plan: ChatPlan) -> tuple:
    if not plan.stream:
        return (build_completion(plan),)
    return stream_entry([_PROMPT_FILTER, *build_stream(plan)])


class MockAzureOpenAI(MockServer):
    """One Azure OpenAI resource with the given ``deployments`` (deployment -> model)."""

    id_placeholder = _ID_PLACEHOLDER
    int_message = _INT_MESSAGE

    def __init__(self, deployments: Mapping[str, str], *, api_key: str | None = None,
                 ad_token: str | None = None, chunks: int = 20, prompt_tokens: int = 12):
        super().__init__(chunks=chunks, api_key=api_key)
        self.deployments = dict(deployments)
        self.prompt_tokens = prompt_tokens
        self._keys = {api_key.encode()} if api_key else set()
        self._token = b"Bearer " + ad_token.encode() if ad_token else None
        self._cache = WireCache(_build)

    def accept_key(self, api_key: str) -> None:
        """Also accept ``api-key: api_key`` (a customer's own key in BYOK tests)."""
        self._keys.add(api_key.encode())

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return azure_error(str(status), message)

    def _next_id(self) -> bytes:
        self._ids += 1
        return b"chatcmpl-%s%020d" % (self._id_prefix, self._ids)

    def _record_request(self, index: int, req: ParsedRequest, path: str) -> None:
        self.requests.append(MockRequest(index, req.method, req.target, req.headers, req.body))

    def _authorized(self, req: ParsedRequest) -> bool:
        key = next((v for k, v in req.headers if k == b"api-key"), None)
        if key is not None:
            return key in self._keys
        bearer = next((v for k, v in req.headers if k == b"authorization"), None)
        return self._token is not None and bearer == self._token

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        if not self._authorized(req):
            return Reply(401, azure_error("401", (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.")))
        parts = path.split("/", 4)  # "", "openai", "deployments", name, rest
        if len(parts) < 5 or parts[1:3] != ["openai", "deployments"] \
                or "/" + parts[4] not in _ENDPOINTS or req.method != "POST":
            return Reply(404, azure_error("404", "Resource not found"))
        if "api-version=" not in req.target.partition("?")[2]:
            return Reply(400, azure_error(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."))
        model = self.deployments.get(parts[3])
        if model is None:
            return Reply(404, azure_error("DeploymentNotFound", (
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.")))
        body, mock = load_body(req.body, "We could not parse the JSON body of your request.")
        status = mock_status(mock)
        if status is not None:
            return Reply(status, azure_error(str(status), f"Mock error {status}."))
        if mock.get("content_filter") == "prompt":
            return Reply(400, _content_filter_refusal())
        body["model"] = model  # Azure answers with the deployment's model, not the body's
        if parts[4] == "embeddings":
            return self._with_mock(mock, Reply(200, build_embeddings(body, self.prompt_tokens)))
        if parts[4] == "completions":  # chat models' deployments refuse it
            return Reply(400, azure_error(
                "OperationNotSupported",
                "The completion operation does not work with the specified model."))
        return self._chat(body, mock)

    def _chat(self, body: dict, mock: dict) -> Reply:
        plan = plan_chat(body, mock, self.chunks, self.prompt_tokens)
        if mock.get("content_filter") == "completion":
            plan = plan._replace(finish="content_filter")
        cached = self._cache.get(plan)
        if plan.stream:
            reply = Reply(200, events=cached[0], framed=cached[1], whole=cached[2:])
        else:
            reply = Reply(200, cached[0].replace(_ID_PLACEHOLDER, self._next_id()))
        return self._with_mock(mock, reply)
