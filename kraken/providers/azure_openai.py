"""Azure OpenAI: OpenAI's wire format behind Azure's URL shape, header and error quirks.

From Azure's REST reference (data plane, GA ``2024-10-21``): a request goes to
``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`` (also
``/completions`` and ``/embeddings``); the key is an ``api-key`` header, or an Entra ID token is
``Authorization: Bearer``. Bodies, streams and usage are OpenAI's (``stream_options.include_usage``
is honoured, so usage is forced as for OpenAI), so ``OpenAICompat`` shapes the body and only
the target and the credential change here. Azure's content-filter refusal (400, ``error.code =
"content_filter"`` with ``innererror.content_filter_result``) becomes OpenAI's 400 without the
filter details: they describe the prompt.
"""
from __future__ import annotations

import orjson

from kraken.config import ProviderConfig
from kraken.config.azure import DEPLOYMENT_NAME
from kraken.errors import InvalidValue, KrakenError, UpstreamStatus, error_body
from kraken.providers.family import Headers, UpstreamRequest
from kraken.providers.openai_compat import CHAT_PATH, EMBEDDINGS_PATH, OpenAICompat
from kraken.providers.scrub import provider_error, scrub
from kraken.providers.wire import base_headers

__all__ = ["AzureOpenAI", "ContentFiltered"]

COMPLETIONS_PATH = "/completions"
_MESSAGE_MAX = 500
"""Characters of Azure's own error message kept in a relayed 4xx (it never holds content)."""


class ContentFiltered(UpstreamStatus):
    """Azure's content filter refused the request: OpenAI's 400 ``content_filter`` error."""

    error_type = "invalid_request_error"
    code = "content_filter"
    param = "prompt"

    def __init__(self) -> None:
        super().__init__(400, b"")
        self.message = ("The request was refused by the provider's content management policy "
                        "(Azure OpenAI content filter).")
        self.body = error_body(self)


class AzureOpenAI(OpenAICompat):
    """Shapes requests for one Azure OpenAI resource: one target per deployment and endpoint."""

    def __init__(self, cfg: ProviderConfig, base_path: str, authority: str):
        super().__init__(cfg, base_path, authority)
        if base_path.endswith("/openai"):  # the endpoint given with Azure's own prefix
            base_path = base_path[: -len("/openai")]
        self._prefix = base_path + "/openai/deployments/"
        self._query = "?api-version=" + cfg.api_version
        self._targets: dict[tuple[str, str], str] = {}
        """(endpoint path, model) -> request target; bounded by the configured models."""
        for model in cfg.models:
            for path in (CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH):
                self._targets[path, model] = self._target_for(path, model)
        credential = None
        if cfg.api_key:
            credential = ((b"authorization", b"Bearer " + cfg.api_key.encode())
                          if cfg.auth == "azure_ad" else (b"api-key", cfg.api_key.encode()))
        self._base_headers, self._keyless_headers = base_headers(authority, credential)

    def _target_for(self, path: str, model: str) -> str:
        deployment = self.cfg.deployments.get(model, model)
        return self._prefix + deployment + path + self._query

    def target(self, path: str, model: str) -> str:
        """The request target of ``path`` for ``model``'s deployment; a model the config does
        not list (a client's ``provider/model``) is its own deployment if it can be one."""
        found = self._targets.get((path, model))
        if found is not None:
            return found
        if model not in self.cfg.deployments and DEPLOYMENT_NAME.fullmatch(model) is None:
            # a client's "provider/model" must not become another path on the resource
            raise InvalidValue(f"model {model!r} is not a deployment name of this provider",
                               param="model")
        return self._target_for(path, model)

    def headers_for(self, api_key: str | None) -> Headers:
        """The base headers, or the customer's own Azure key (BYOK) as ``api-key``."""
        if api_key is None:
            return self._base_headers
        return self._keyless_headers + [(b"api-key", api_key.encode())]

    @staticmethod
    def authorized(headers: Headers, api_key: str) -> Headers:
        """Shaped ``headers`` with the customer's own Azure key (BYOK) as the only credential."""
        return [h for h in headers if h[0] not in (b"api-key", b"authorization")] + [
            (b"api-key", api_key.encode())]

    def chat_request(self, payload: dict, upstream_model: str,
                     api_key: str | None = None) -> UpstreamRequest:
        """OpenAI's body (usage forced on streams, the model kept as named upstream; Azure
        routes by the deployment in the path)."""
        req = OpenAICompat.chat_request(self, payload, upstream_model, api_key)
        return UpstreamRequest(self.target(CHAT_PATH, upstream_model), req.headers, req.body,
                               self, req.hide_usage)

    def completions_request(self, payload: dict, upstream_model: str,
                            api_key: str | None = None) -> UpstreamRequest:
        """Legacy completions: the same body rules as chat (usage forced on streams)."""
        req = OpenAICompat.chat_request(self, payload, upstream_model, api_key)
        return UpstreamRequest(self.target(COMPLETIONS_PATH, upstream_model), req.headers,
                               req.body, self, req.hide_usage)

    def embeddings_request(self, payload: dict, upstream_model: str,
                           api_key: str | None = None) -> UpstreamRequest:
        req = OpenAICompat.embeddings_request(self, payload, upstream_model, api_key)
        return UpstreamRequest(self.target(EMBEDDINGS_PATH, upstream_model), req.headers,
                               req.body, self)

    def map_error(self, status: int, body: bytes) -> KrakenError:
        """OpenAI's mapping; a content-filter refusal as OpenAI's 400, other 4xx bodies in
        OpenAI's envelope (Azure's has no ``type``)."""
        error = _azure_error(body)
        if status == 400 and error is not None and error.get("code") == "content_filter":
            return ContentFiltered()
        mapped = provider_error(self.name, self.cfg.api_key, status, body)
        if isinstance(mapped, UpstreamStatus) and error is not None:
            mapped.body = scrub(_openai_envelope(error), self.cfg.api_key)
        return mapped


def _azure_error(body: bytes) -> dict | None:
    """The ``error`` object of an Azure error body, or None when it has none."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = obj.get("error") if isinstance(obj, dict) else None
    return error if isinstance(error, dict) else None


def _openai_envelope(error: dict) -> bytes:
    """Azure's ``{"error": {"code", "message", ...}}`` as OpenAI's four fields, nothing more
    (``innererror`` and ``details`` are dropped)."""
    message = error.get("message")
    code = error.get("code")
    param = error.get("param")
    return orjson.dumps({"error": {
        "message": message[:_MESSAGE_MAX] if isinstance(message, str) else "provider error",
        "type": "invalid_request_error",
        "param": param[:64] if isinstance(param, str) else None,
        "code": code[:64] if isinstance(code, str) else None,
    }})
