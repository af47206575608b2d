"""A local Amazon Bedrock Runtime: the Converse and ConverseStream APIs, SigV4 verified for real.

From the AWS Bedrock Runtime API reference: ``POST /model/{modelId}/converse`` answers a JSON
body (``output.message.content``, ``stopReason``, ``usage``, ``metrics``);
``POST /model/{modelId}/converse-stream`` answers ``application/vnd.amazon.eventstream``: binary
frames with both CRCs (``kraken.providers.eventstream.encode``), one per event (``messageStart``,
``contentBlockStart`` for a tool use, ``contentBlockDelta``, ``contentBlockStop``,
``messageStop``, ``metadata``), each JSON payload padded with a ``p`` member as AWS pads them.
Errors are AWS's: the status and ``{"message": ...}``.

Every request must carry a valid Signature Version 4 for the mock's credentials (region and
service ``bedrock`` in the scope, ``x-amz-date`` within 5 minutes, the session token when the
credentials have one): the signature is recomputed from the request as received. Tests steer
answers by model id: ``fail`` maps a model to (status, message); ``break_stream`` to
(events before, exception type, message) for an exception event mid-stream; ``corrupt_stream``
to the index of the event sent with a wrong message CRC; ``cut_stream`` to a number of events
after which the answer ends cleanly (the HTTP body complete, no ``messageStop``);
``drop_stream`` to a number of events after which the connection closes (a bare FIN).
"""
from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import unquote

import orjson

from kraken.mock.http1 import ParsedRequest
from kraken.mock.server import MockRequest, MockServer, Reply, stream_reply
from kraken.providers.eventstream import encode
from kraken.providers.sigv4 import (
    ALGORITHM, EMPTY_SHA256, Credentials, authorization, canonical_request, signing_key,
)

__all__ = ["EVENTSTREAM", "MockBedrock", "aws_error"]

EVENTSTREAM = b"application/vnd.amazon.eventstream"
_SKEW_S = 300
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
_BAD_SIGNATURE = ("The request signature we calculated does not match the signature you "
                  "provided. Check your AWS Secret Access Key and signing method. Consult the "
                  "service documentation for details.")


def aws_error(message: str) -> bytes:
    """Bedrock's error body (the exception's name travels in ``x-amzn-ErrorType``)."""
    return orjson.dumps({"message": message})


def _frame(event: str, payload: dict) -> bytes:
    body = orjson.dumps({**payload, "p": _PAD[: 8 + len(event)]})
    return encode({":event-type": event, ":content-type": "application/json",
                   ":message-type": "event"}, body)


def _exception(kind: str, message: str) -> bytes:
    return encode({":exception-type": kind, ":content-type": "application/json",
                   ":message-type": "exception"}, orjson.dumps({"message": message}))


def _sample(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _sample(v) for k, v in props.items()}
    return {"integer": 1, "number": 1.5, "boolean": True, "array": []}.get(kind, "mock")


class MockBedrock(MockServer):
    """Bedrock Runtime for one key pair in one region."""

    def __init__(self, credentials: Credentials, *, region: str = "us-east-1",
                 chunks: int = 5, prompt_tokens: int = 12, cache_read: int = 0):
        super().__init__(chunks=chunks)
        self.credentials = credentials
        self.region = region
        self.prompt_tokens = prompt_tokens
        self.cache_read = cache_read
        self.fail: dict[str, tuple[int, str]] = {}
        self.break_stream: dict[str, tuple[int, str, str]] = {}
        self.corrupt_stream: dict[str, int] = {}
        self.cut_stream: dict[str, int] = {}
        self.drop_stream: dict[str, int] = {}
        self.clock = time.time

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return aws_error(message)

    def _record_request(self, index: int, req: ParsedRequest, path: str) -> None:
        self.requests.append(MockRequest(index, req.method, req.target, req.headers, req.body))

    # ---- SigV4 -----------------------------------------------------------------------
    def _signature_error(self, req: ParsedRequest) -> str | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in req.headers}
        auth = headers.get("authorization", "")
        if not auth.startswith(ALGORITHM + " "):
            return "Missing Authentication Token"
        fields = dict(p.strip().split("=", 1) for p in auth[len(ALGORITHM) + 1:].split(",")
                      if "=" in p)
        scope = fields.get("Credential", "").split("/")
        if len(scope) != 5 or scope[0] != self.credentials.access_key_id:
            return "The security token included in the request is invalid."
        date_time = headers.get("x-amz-date", "")
        try:
            stamp = calendar.timegm(time.strptime(date_time, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return "Missing or invalid X-Amz-Date"
        if abs(stamp - self.clock()) > _SKEW_S:
            return "Signature expired: the request time is too far from the server time."
        if scope[1] != date_time[:8] or scope[2:] != [self.region, "bedrock", "aws4_request"]:
            return "Credential should be scoped to a valid region and service."
        signed = fields.get("SignedHeaders", "").split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return _BAD_SIGNATURE
        token = self.credentials.session_token
        if token and (headers.get("x-amz-security-token") != token
                      or "x-amz-security-token" not in signed):
            return "The security token included in the request is invalid."
        path, _, query = req.target.partition("?")
        body_hash = hashlib.sha256(req.body).hexdigest() if req.body else EMPTY_SHA256
        canonical, names = canonical_request(
            req.method, path, query, [(n, headers.get(n, "")) for n in signed], body_hash)
        key = signing_key(self.credentials.secret_access_key, scope[1], self.region, "bedrock")
        expected = authorization(self.credentials, key, "/".join(scope[1:]), date_time,
                                 canonical, names)
        return None if hmac.compare_digest(expected, auth) else _BAD_SIGNATURE

    # ---- routes ----------------------------------------------------------------------
    def _route(self, req: ParsedRequest, path: str) -> Reply:
        parts = path.split("/")
        if req.method != "POST" or len(parts) != 4 or parts[1] != "model" \
                or parts[3] not in ("converse", "converse-stream"):
            return Reply(404, aws_error("Not Found"))
        problem = self._signature_error(req)
        if problem is not None:
            return Reply(403, aws_error(problem))
        model = unquote(parts[2])
        if model in self.fail:
            status, message = self.fail[model]
            return Reply(status, aws_error(message))
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return Reply(400, aws_error("Malformed input request, please reformat your input "
                                        "and try again."))
        problem = _invalid(body)
        if problem is not None:
            return Reply(400, aws_error(problem))
        answer = self._answer(body)
        if parts[3] == "converse":
            return Reply(200, orjson.dumps(_converse_body(answer)))
        events = _stream_events(answer)
        broken = self.break_stream.get(model)
        if broken is not None:
            events = events[: broken[0]] + [_exception(broken[1], broken[2])]
        if model in self.corrupt_stream:
            bad = self.corrupt_stream[model]
            events[bad] = events[bad][:-1] + bytes([events[bad][-1] ^ 0xFF])
        if model in self.cut_stream:
            events = events[: self.cut_stream[model]]
        mock = {"drop_after_chunks": self.drop_stream[model]} if model in self.drop_stream else {}
        return self._with_mock(mock, stream_reply(events, ctype=EVENTSTREAM))

    def _answer(self, body: dict) -> dict:
        """What the model says: a tool use when the tool choice forces one, else words."""
        tools = body.get("toolConfig") or {}
        choice = tools.get("toolChoice") or {}
        usage = {"inputTokens": self.prompt_tokens, "cacheReadInputTokens": self.cache_read}
        if "any" in choice or "tool" in choice:
            specs = [t["toolSpec"] for t in tools.get("tools") or () if "toolSpec" in t]
            spec = next((s for s in specs if s["name"] == choice.get("tool", {}).get("name")),
                        specs[0])
            return {"tool": {"toolUseId": "tooluse_mock0000000001", "name": spec["name"],
                             "input": _sample(spec.get("inputSchema", {}).get("json"))},
                    "stop": "tool_use", "usage": {**usage, "outputTokens": 9}}
        limit = (body.get("inferenceConfig") or {}).get("maxTokens") or self.chunks
        n = min(self.chunks, limit)
        words = [f"word{i} " for i in range(n)]
        return {"words": words, "stop": "max_tokens" if n < self.chunks else "end_turn",
                "usage": {**usage, "outputTokens": n}}


def _invalid(body: Any) -> str | None:
    """Converse's own checks on what Kraken sends (a ValidationException message, or None)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        return "1 validation error detected: Value at 'messages' failed to satisfy constraint"
    if messages[0].get("role") != "user":
        return "A conversation must start with a user message. Try again with a conversation " \
               "that starts with a user message."
    for a, b in zip(messages, messages[1:]):
        if a.get("role") == b.get("role"):
            return "A conversation must alternate between user and assistant roles."
    allowed = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
               "additionalModelRequestFields", "promptVariables", "performanceConfig"}
    extra = sorted(set(body) - allowed)
    if extra:
        return f"extraneous key [{extra[0]}] is not permitted"
    return None


def _converse_body(answer: dict) -> dict:
    usage = answer["usage"]
    usage = {**usage, "totalTokens": usage["inputTokens"] + usage["outputTokens"]
             + usage["cacheReadInputTokens"]}
    content = [{"toolUse": answer["tool"]}] if "tool" in answer \
        else [{"text": "".join(answer["words"])}]
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": answer["stop"], "usage": usage, "metrics": {"latencyMs": 42}}


def _stream_events(answer: dict) -> list[bytes]:
    events = [_frame("messageStart", {"role": "assistant"})]
    if "tool" in answer:
        tool = answer["tool"]
        events.append(_frame("contentBlockStart", {"contentBlockIndex": 0, "start": {
            "toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}}))
        raw = orjson.dumps(tool["input"]).decode()
        half = len(raw) // 2
        for piece in (raw[:half], raw[half:]):
            events.append(_frame("contentBlockDelta", {"contentBlockIndex": 0,
                                                       "delta": {"toolUse": {"input": piece}}}))
    else:
        events += [_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}})
                   for w in answer["words"]]
    events.append(_frame("contentBlockStop", {"contentBlockIndex": 0}))
    events.append(_frame("messageStop", {"stopReason": answer["stop"]}))
    usage = _converse_body(answer)["usage"]
    events.append(_frame("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
    return events
