"""A deterministic Vertex AI (``{region}-aiplatform.googleapis.com``) and Google OAuth2 token
endpoint for tests.

The token endpoint (``POST /token``, the ``token_uri`` a test key file names) does what
``oauth2.googleapis.com/token`` does for the JWT bearer grant (RFC 7523): the form's
``grant_type`` must be ``urn:ietf:params:oauth:grant-type:jwt-bearer``; the ``assertion`` must be
an RS256 JWT whose signature verifies against the service account's public key, with ``iss`` the
account's email, ``aud`` the token URI, a ``scope`` holding ``cloud-platform``, ``iat`` not in the
future and ``exp`` at most an hour after it and not past. It answers ``{"access_token",
"expires_in", "token_type": "Bearer"}`` (``expires_in`` settable, so a test injects a short
lifetime) or OAuth's ``{"error": "invalid_grant", "error_description"}``. ``token_status`` makes
it fail; ``exchanges`` counts successful grants, ``claims`` keeps each verified claim set.

The Vertex routes (``/v1/projects/{project}/locations/{region}/...``) require ``Authorization:
Bearer`` with a token this mock issued and that has not expired (else Google's 401
``UNAUTHENTICATED``), and speak each publisher's real wire format by handing the request to the
matching mock: ``publishers/google/models/{m}:generateContent|streamGenerateContent`` (Gemini's
native format, ``alt=sse``), ``publishers/anthropic/models/{m}:rawPredict|streamRawPredict``
(Anthropic Messages; the body must carry ``anthropic_version: "vertex-2023-10-16"`` and no
``model``, ``stream`` must match the method) and ``endpoints/openapi/chat/completions``
(OpenAI Chat Completions, model ``publisher/model``).
"""
from __future__ import annotations

import base64
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kraken.mock.anthropic_mock import MockAnthropic, error_body as anthropic_error
from kraken.mock.gemini_mock import MockGemini, google_error
from kraken.mock.http1 import ParsedRequest
from kraken.mock.openai_mock import MockOpenAI
from kraken.mock.server import MockServer, Reply, stream_entry

__all__ = ["GRANT_TYPE", "MockVertex", "VERTEX_VERSION"]

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_VERSION = "vertex-2023-10-16"
_PATH = re.compile(r"/v1/projects/([^/]+)/locations/([^/]+)/(.+)")
_PUBLISHER = re.compile(r"publishers/(google|anthropic)/models/([^/:]+):([A-Za-z]+)")
_PLACEHOLDERS = (b"msg_" + b"@" * 24, b"chatcmpl-" + b"@" * 28)
_UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.")


def _unb64(part: bytes) -> bytes:
    return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))


class _Grant(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


class MockVertex(MockServer):
    """Vertex AI and its token endpoint on one loopback port (see the module docstring)."""

    def __init__(self, public_key: rsa.RSAPublicKey, client_email: str, *,
                 project: str = "kraken-test", region: str = "us-central1",
                 host: str = "127.0.0.1", port: int = 0, chunks: int = 5,
                 prompt_tokens: int = 12, expires_in: int = 3599):
        super().__init__(host, port, chunks=chunks)
        self.public_key = public_key
        self.client_email = client_email
        self.project, self.region = project, region
        self.expires_in = expires_in
        self.token_status: int | None = None
        """When set, the token endpoint answers this status (4xx: ``invalid_grant``)."""
        self.exchanges = 0
        self.claims: list[dict] = []
        self._tokens: dict[str, float] = {}
        self._gemini = MockGemini(chunks=chunks, prompt_tokens=prompt_tokens)
        self._claude = MockAnthropic(chunks=chunks, input_tokens=prompt_tokens)
        self._openai = MockOpenAI(chunks=chunks, prompt_tokens=prompt_tokens)

    @property
    def token_uri(self) -> str:
        return self.origin + "/token"

    def key_file(self, private_pem: str) -> dict[str, str]:
        """A service-account key file's fields, its ``token_uri`` this mock."""
        return {"type": "service_account", "project_id": self.project,
                "private_key_id": "0123456789abcdef", "private_key": private_pem,
                "client_email": self.client_email, "client_id": "1234567890",
                "token_uri": self.token_uri}

    def _record_request(self, index: int, req: ParsedRequest, path: str) -> None:
        """Recorded with the whole request target: a test sees ``?alt=sse`` and that no key
        or token ever travelled in a URL."""
        super()._record_request(index, req, req.target)

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (Vertex answers 401)."""
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    # -- provider hooks used by MockServer

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return google_error(status, message)

    def _next_id(self) -> bytes:
        self._ids += 1
        return b"%s%012d" % (self._id_prefix, self._ids)

    def _route(self, req: ParsedRequest, path: str) -> Reply:
        if path == "/token":
            return self._token(req)
        match = _PATH.fullmatch(path)
        if match is None or req.method != "POST":
            return Reply(404, google_error(404, f"The requested URL {path[:80]} was not found."))
        if not self._authorized(req):
            return Reply(401, google_error(401, _UNAUTHENTICATED))
        project, region, rest = match.groups()
        if (project, region) != (self.project, self.region):
            return Reply(404, google_error(404, f"Project {project[:40]} or location "
                                                f"{region[:40]} not found."))
        if rest == "endpoints/openapi/chat/completions":
            return self._restamp(self._openai_chat(req))
        found = _PUBLISHER.fullmatch(rest)
        if found is None:
            return Reply(404, google_error(404, f"Publisher model {rest[:80]} not found."))
        publisher, model, method = found.groups()
        if publisher == "google":
            return self._gemini._route(req, f"/v1beta/models/{model}:{method}")
        return self._restamp(self._anthropic(req, model, method))

    # -- token endpoint

    def _token(self, req: ParsedRequest) -> Reply:
        try:
            if self.token_status is not None:
                raise _Grant(self.token_status, "invalid_grant" if self.token_status < 500
                             else "internal_failure", "Mock token endpoint failure.")
            form = parse_qs(req.body.decode("ascii", "replace"))
            if form.get("grant_type") != [GRANT_TYPE]:
                raise _Grant(400, "unsupported_grant_type", "Invalid grant_type.")
            claims = self._verify(form.get("assertion", [""])[0].encode())
        except _Grant as grant:
            return Reply(grant.status, orjson.dumps(
                {"error": grant.error, "error_description": grant.description}))
        token = "ya29.mock-" + secrets.token_urlsafe(24)
        self._tokens[token] = time.time() + self.expires_in
        self.exchanges += 1
        self.claims.append(claims)
        return Reply(200, orjson.dumps({"access_token": token, "expires_in": self.expires_in,
                                        "token_type": "Bearer"}))

    def _verify(self, assertion: bytes) -> dict[str, Any]:
        parts = assertion.split(b".")
        if len(parts) != 3:
            raise _Grant(400, "invalid_grant", "Invalid JWT: not a JWS compact serialization.")
        try:
            header, claims = orjson.loads(_unb64(parts[0])), orjson.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, orjson.JSONDecodeError):
            raise _Grant(400, "invalid_grant", "Invalid JWT: not decodable.") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise _Grant(400, "invalid_grant", "Invalid JWT: alg must be RS256.")
        try:
            self.public_key.verify(signature, parts[0] + b"." + parts[1], padding.PKCS1v15(),
                                   hashes.SHA256())
        except InvalidSignature:
            raise _Grant(400, "invalid_grant", "Invalid JWT Signature.") from None
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if claims.get("iss") != self.client_email:
            raise _Grant(400, "invalid_grant", "Invalid JWT: iss is not the service account.")
        if claims.get("aud") != self.token_uri:
            raise _Grant(400, "invalid_grant", "Invalid JWT: aud is not the token URI.")
        if not isinstance(claims.get("scope"), str) or SCOPE not in claims["scope"].split():
            raise _Grant(400, "invalid_scope", "Invalid OAuth scope or ID token audience.")
        if (not isinstance(iat, int) or not isinstance(exp, int) or iat > now + 60
                or exp <= now or exp - iat > 3600):
            raise _Grant(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token "
                         "(60 minutes) and in a reasonable timeframe.")
        return claims

    def _authorized(self, req: ParsedRequest) -> bool:
        got = next((v for k, v in req.headers if k == b"authorization"), b"")
        if not got.startswith(b"Bearer "):
            return False
        expiry = self._tokens.get(got[7:].decode("latin-1"))
        return expiry is not None and time.time() < expiry

    # -- publishers

    def _anthropic(self, req: ParsedRequest, model: str, method: str) -> Reply:
        if method not in ("rawPredict", "streamRawPredict"):
            return Reply(404, google_error(404, f"Method {method[:40]} not found."))
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return Reply(400, anthropic_error(400, "invalid JSON body"))
        if body.get("anthropic_version") != VERTEX_VERSION:
            return Reply(400, anthropic_error(400, "anthropic_version: must be vertex-2023-10-16"))
        if "model" in body:
            return Reply(400, anthropic_error(400, "model: Extra inputs are not permitted"))
        if (body.get("stream") is True) != (method == "streamRawPredict"):
            return Reply(400, anthropic_error(400, "stream: use streamRawPredict to stream"))
        body = {k: v for k, v in body.items() if k != "anthropic_version"}
        body["model"] = model
        inner = req._replace(body=orjson.dumps(body),
                             headers=[*req.headers, (b"anthropic-version", b"2023-06-01")])
        return self._claude._route(inner, "/v1/messages")

    def _openai_chat(self, req: ParsedRequest) -> Reply:
        try:
            model = orjson.loads(req.body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            model = None
        if not isinstance(model, str) or "/" not in model:
            return Reply(400, google_error(400, "model must be publisher/model, e.g. "
                                                "google/gemini-2.5-flash"))
        return self._openai._route(req, "/v1/chat/completions")

    def _restamp(self, reply: Reply) -> Reply:
        """A fresh response id where the inner mock's cached bytes hold its placeholder."""
        rid = self._next_id()
        fresh = {p: p[: p.index(b"@")] + rid.rjust(len(p) - p.index(b"@"), b"0")
                 for p in _PLACEHOLDERS}

        def stamp(data: bytes) -> bytes:
            for placeholder, value in fresh.items():
                data = data.replace(placeholder, value)
            return data

        reply.body = stamp(reply.body)
        if reply.events is not None:
            entry = stream_entry([stamp(e) for e in reply.events])
            reply.events, reply.framed, reply.whole = entry[0], entry[1], entry[2:]
        return reply
