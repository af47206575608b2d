"""The options only ``kind = "azure_openai"`` takes: api version, auth mode, deployments.

Azure OpenAI addresses a model through a deployment in the URL path
(``/openai/deployments/{deployment}/...?api-version=...``), so deployment names and the
version go into a request target: they are checked here, once, against the characters Azure
allows, instead of being escaped on every request.
"""
from __future__ import annotations

import re
from typing import Any

from kraken.config.sections import ConfigError

__all__ = ["AD_TOKEN_ENV", "AUTH_MODES", "AZURE_KIND", "DEPLOYMENT_NAME", "azure_options"]

AZURE_KIND = "azure_openai"
AUTH_MODES = ("api-key", "azure_ad")
"""``api-key``: the key in an ``api-key`` header; ``azure_ad``: an Entra ID token as Bearer."""
AD_TOKEN_ENV = "AZURE_OPENAI_AD_TOKEN"
"""The variable the Entra ID token is read from by default (the openai SDK's name too)."""
_ONLY_AZURE = ("api_version", "auth", "deployments", "azure_ad_token_env")
_NOT_ON_AZURE = ("responses", "moderations", "images", "rerank")
"""Endpoints Kraken does not send to Azure's deployment URLs (their paths differ)."""
DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
"""What Azure allows in a deployment name (it becomes a path segment)."""
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?")


def azure_options(name: str, kind: str, body: dict[str, Any], key_env: str,
                  default_version: str, source: str) -> str:
    """Check (and default) the Azure options in a provider's ``body``; the key variable to read.

    Other kinds may not set them. With ``auth = "azure_ad"`` the credential is the token read
    from ``azure_ad_token_env``, so that variable is the one startup names when it is unset.
    """
    where = f"{source}: providers.{name}"
    if kind != AZURE_KIND:
        for key in _ONLY_AZURE:
            if key in body:
                raise ConfigError(f'{where}.{key} is only for kind = "{AZURE_KIND}"')
        return key_env
    for key in _NOT_ON_AZURE:
        if body.get(key) is True:
            raise ConfigError(f'{where}.{key} is not served for kind = "{AZURE_KIND}"')
    version = body.setdefault("api_version", default_version)
    if not isinstance(version, str) or _API_VERSION.fullmatch(version) is None:
        raise ConfigError(
            f'{where}.api_version must look like "2024-10-21" or "2025-01-01-preview"')
    auth = body.setdefault("auth", "api-key")
    if auth not in AUTH_MODES:
        raise ConfigError(f"{where}.auth must be one of {list(AUTH_MODES)}")
    deployments = body.setdefault("deployments", {})
    if not isinstance(deployments, dict) or not all(
            isinstance(m, str) and isinstance(d, str) and DEPLOYMENT_NAME.fullmatch(d)
            for m, d in deployments.items()):
        raise ConfigError(f"{where}.deployments must map model names to deployment names "
                          "(letters, digits, '.', '_', '-'; at most 64)")
    body.setdefault("models", list(deployments))
    models = body["models"]
    if isinstance(models, list):
        for model in models:
            if (isinstance(model, str) and model not in deployments
                    and not DEPLOYMENT_NAME.fullmatch(model)):
                raise ConfigError(f"{where}.models: {model!r} has no entry in deployments and is "
                                  "not a valid deployment name itself")
    token_env = body.pop("azure_ad_token_env", AD_TOKEN_ENV)
    if not isinstance(token_env, str):
        raise ConfigError(f"{where}.azure_ad_token_env must be a string")
    return token_env if auth == "azure_ad" else key_env
