"""The Bedrock wire family (``kind = "bedrock"``): OpenAI chat to the Converse API, signed.

Requests go to ``{base_url}/model/{modelId}/converse`` (or ``/converse-stream``) with the model
id URL-encoded in the path (``anthropic.claude-3-5-sonnet-20240620-v1:0``'s ``:`` travels as
``%3A``), a Converse body (``bedrock_translate``) and an AWS Signature Version 4 over the
method, path, ``host``, ``content-type``, ``x-amz-date`` and the body's hash (``sigv4``; the
session token, when the credentials are temporary, is sent and signed as
``x-amz-security-token``). Answers are re-said in OpenAI's format by ``bedrock_chat``.

Usage: Converse's ``usage`` in a body, the ``metadata`` event in a stream (read by
``MetadataTap`` from the provider's frames as they pass). Errors: Bedrock answers
``{"message": ...}`` with the exception named only in a header, so the status says which it is
(``ERRORS``). BYOK is not offered: a customer's credential would be an AWS key pair and the
signature covers the whole request, not one header (``authorized`` stays None).
"""
from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

import orjson

from kraken.config import ProviderConfig
from kraken.errors import (
    InvalidValue, KrakenError, UpstreamError, UpstreamFailed, UpstreamOverloaded, UpstreamStatus,
    UpstreamTimeout,
)
from kraken.providers.bedrock_answer import (
    StreamCut, bedrock_usage, stream_failure, usage_of_event,
)
from kraken.providers.bedrock_translate import chat_to_converse
from kraken.providers.error_formats import OPENAI
from kraken.providers.eventstream import Decoder, EventStreamError, Message
from kraken.providers.family import FamilyBase, UpstreamRequest
from kraken.providers.scrub import provider_error, scrub
from kraken.providers.sigv4 import Credentials, Signer
from kraken.providers.usage import AnthropicUsage
from kraken.providers.wire import usage_in_body

__all__ = ["ERRORS", "SERVICE", "BedrockFamily", "MetadataTap", "MissingCredentials"]

SERVICE = "bedrock"
"""The SigV4 service name of the Bedrock Runtime API (its host is ``bedrock-runtime``)."""
_MESSAGE_MAX = 512
_DOT_SEGMENTS = (".", "..")
"""Model ids ``quote`` leaves as they are that a server resolves as path steps, not an id."""

ERRORS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "invalid_request_error"),
    404: ("ResourceNotFoundException", "invalid_request_error"),
    413: ("ValidationException", "invalid_request_error"),
    422: ("ValidationException", "invalid_request_error"),
}
"""Bedrock 4xx statuses relayed to the client, as (exception, OpenAI error type). 401/403
(AccessDenied, UnrecognizedClient, InvalidSignature, ExpiredToken: the gateway's credentials)
are 502 as for every provider; 429 (ThrottlingException, ServiceQuotaExceeded, ModelNotReady)
stays 429 and may fall back; 408 (ModelTimeout) is 504; 503 (ServiceUnavailable) is 503; 424
(ModelError) and 5xx are 502."""


class MissingCredentials(UpstreamError):
    """The provider has no AWS key pair (named at startup): another candidate may serve."""

    status = 503
    error_type = "provider_not_configured"
    code = "provider_credentials_missing"


class MetadataTap:
    """Stream tap: ConverseStream bytes pass through untouched; the ``metadata`` event's usage
    is kept, and so is how the stream failed after its first byte (``failure``, which the relay
    writes into the request record): an exception event, a framing fault (bad CRC, bad
    lengths, an oversized message), or an end before ``messageStop``. It reads as the response
    filter (``bedrock_answer.ChunkTranslator``) does, so the record says what the client was
    told: nothing after ``metadata`` or a failure counts."""

    __slots__ = ("_decoder", "_stopped", "failure", "usage")

    def __init__(self) -> None:
        self._decoder: Decoder | None = Decoder()
        self._stopped = False
        self.usage: AnthropicUsage | None = None
        self.failure: KrakenError | None = None

    def feed(self, data: bytes) -> bytes:
        decoder = self._decoder
        if decoder is not None:
            try:
                for message in decoder.feed(data):
                    self._read(message)
            except EventStreamError as exc:
                self._fail(exc)
        return data

    def _read(self, message: Message) -> None:
        if self._decoder is None:  # metadata or a failure ended the answer
            return
        failure = stream_failure(message)
        if failure is not None:
            self._fail(failure)
            return
        event = message.header(":event-type")
        if event == "messageStop":
            self._stopped = True
        elif event == "metadata":
            self._decoder = None
            usage = usage_of_event(message)
            if usage is not None:
                self.usage = usage

    def _fail(self, failure: KrakenError) -> None:
        if self._decoder is not None:
            self._decoder = None
            self.failure = failure

    def flush(self) -> bytes:
        """The provider's stream ended: cut short unless ``messageStop`` came first."""
        if not self._stopped:
            self._fail(StreamCut("provider stream ended before the end of the answer"))
        return b""


class BedrockFamily(FamilyBase):
    """Shapes signed Converse requests for one configured ``kind = "bedrock"`` provider."""

    __slots__ = ("_authority", "_base", "_signer", "cfg", "name")

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        self.cfg = cfg
        self.name = cfg.name
        self._base = base_path.rstrip("/")
        self._authority = authority
        self._signer = None
        if cfg.aws_access_key_id and cfg.aws_secret_access_key:
            self._signer = Signer(Credentials(cfg.aws_access_key_id, cfg.aws_secret_access_key,
                                              cfg.aws_session_token), cfg.aws_region, SERVICE)

    def chat_request(self, payload: dict, upstream_model: str) -> UpstreamRequest:
        """A chat completion as a signed Converse (or ConverseStream) request."""
        signer = self._signer
        if signer is None:
            raise MissingCredentials(f"provider {self.name} has no AWS credentials (see the "
                                     "warning at startup)")
        body = orjson.dumps(chat_to_converse(payload))
        stream = payload.get("stream") is True
        if upstream_model in _DOT_SEGMENTS:  # "/model/../converse" is another path
            raise InvalidValue(f"model {upstream_model!r} is not a Bedrock model id",
                               param="model")
        path = _model_path(self._base, upstream_model, stream)
        signed = signer.sign("POST", path, "", [("host", self._authority),
                                                ("content-type", "application/json")], body)
        headers = [(k.encode(), v.encode()) for k, v in signed]
        headers += [(b"accept", b"application/vnd.amazon.eventstream" if stream
                     else b"application/json"),
                    (b"user-agent", b"kraken-gateway"),
                    (b"content-length", str(len(body)).encode())]
        return UpstreamRequest(path, headers, body, self)

    # ---- what the relay needs ------------------------------------------------------
    @staticmethod
    def usage_from_body(body: bytes) -> AnthropicUsage | None:
        return usage_in_body(body, bedrock_usage)

    @staticmethod
    def usage_parser():
        return _no_usage  # streams are read by MetadataTap, never as SSE

    @staticmethod
    def stream_tap(strip_usage: bool) -> MetadataTap:
        return MetadataTap()

    sse_error_event = staticmethod(OPENAI.sse_event)

    def map_error(self, status: int, body: bytes) -> KrakenError:
        """A provider error before the first byte, in OpenAI's shape (see ``ERRORS``)."""
        secret = self.cfg.aws_secret_access_key
        known = ERRORS.get(status)
        if known is not None:
            return UpstreamStatus(status, _openai_error(scrub(body, secret), *known))
        if status == 408:
            return UpstreamTimeout(f"provider {self.name} returned {status}")
        if status == 503:
            return UpstreamOverloaded(f"provider {self.name} returned {status}")
        if status == 424:
            return UpstreamFailed(f"provider {self.name} returned {status}")
        return provider_error(self.name, secret, status, body)


@lru_cache(maxsize=256)
def _model_path(base: str, model: str, stream: bool) -> str:
    """``{base}/model/{id}/converse[-stream]``, the id URL-encoded (``:`` as ``%3A``); cached,
    as routes name configured models."""
    return f"{base}/model/{quote(model, safe='')}/" + ("converse-stream" if stream else "converse")


def _openai_error(body: bytes, code: str, error_type: str) -> bytes:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    message = obj.get("message") or obj.get("Message") if isinstance(obj, dict) else None
    if not isinstance(message, str) or not message:
        message = f"provider returned {code}"
    return orjson.dumps({"error": {"message": message[:_MESSAGE_MAX], "type": error_type,
                                   "param": None, "code": code}})


def _no_usage(event: bytes) -> None:
    return None
