"""The options only ``kind = "vertex"`` takes: the Google Cloud project, region and key file.

Vertex AI addresses a model through the project and region in the URL path
(``/v1/projects/{project}/locations/{region}/publishers/...``), so both are checked here,
once, against the characters Google allows, instead of being escaped on every request. The
service-account key file comes from ``credentials_file`` or ``GOOGLE_APPLICATION_CREDENTIALS``
(Google's own variable); it is read when the provider is built, not here.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kraken.config.sections import ConfigError

__all__ = ["CREDENTIALS_ENV", "VERTEX_KIND", "vertex_base_url", "vertex_options"]

VERTEX_KIND = "vertex"
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
_ONLY_VERTEX = ("project", "region", "credentials_file")
_PROJECT = re.compile(r"[a-z][a-z0-9\-]{4,28}[a-z0-9]")
"""Google Cloud project ids: 6-30 lower-case letters, digits and hyphens."""
_REGION = re.compile(r"global|[a-z]+-[a-z]+[0-9]{1,2}")
_NOT_ON_VERTEX = ("embeddings", "responses", "completions", "moderations", "images", "rerank")


def vertex_base_url(region: str) -> str:
    """Google's endpoint for ``region`` (the ``global`` endpoint has no region prefix)."""
    if region == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


def vertex_options(name: str, kind: str, body: dict[str, Any], env: Mapping[str, str],
                   source: str) -> None:
    """Check (and default) the Vertex options in a provider's ``body``; other kinds may not
    set them. An unset key file is not an error here: startup warns and requests answer 503."""
    where = f"{source}: providers.{name}"
    if kind != VERTEX_KIND:
        for key in _ONLY_VERTEX:
            if key in body:
                raise ConfigError(f'{where}.{key} is only for kind = "{VERTEX_KIND}"')
        return
    if "api_key" in body:
        raise ConfigError(f"{where}.api_key: Vertex AI takes no API key; the service-account "
                          "key file (credentials_file) is the credential")
    for key in _NOT_ON_VERTEX:
        if body.get(key) is True:
            raise ConfigError(f'{where}.{key} is not served for kind = "{VERTEX_KIND}"')
    project, region = body.get("project"), body.get("region")
    if not isinstance(project, str) or _PROJECT.fullmatch(project) is None:
        raise ConfigError(f"{where}.project must be a Google Cloud project id "
                          "(6-30 lower-case letters, digits, '-')")
    if not isinstance(region, str) or _REGION.fullmatch(region) is None:
        raise ConfigError(f'{where}.region must be a region such as "us-central1", or "global"')
    if not body.get("base_url"):
        body["base_url"] = vertex_base_url(region)
    credentials = body.setdefault("credentials_file", env.get(CREDENTIALS_ENV, ""))
    if not isinstance(credentials, str):
        raise ConfigError(f"{where}.credentials_file must be a path (a string)")
