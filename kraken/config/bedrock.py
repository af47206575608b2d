"""The options only ``kind = "bedrock"`` takes: the AWS region and where its key pair comes from.

Bedrock signs every request with an AWS key pair (SigV4) instead of sending a key, so its
credential is two or three values: read from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``) or from the variables the provider
names (``access_key_id_env``, ...). The region goes into the host name and the signature, so it
is checked here, once. What is missing is named at startup like an unset key variable.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from kraken.config.sections import ConfigError

__all__ = ["BEDROCK_KIND", "ENV_DEFAULTS", "REGION", "bedrock_options"]

BEDROCK_KIND = "bedrock"
ENV_DEFAULTS = {"access_key_id_env": "AWS_ACCESS_KEY_ID",
                "secret_access_key_env": "AWS_SECRET_ACCESS_KEY",
                "session_token_env": "AWS_SESSION_TOKEN"}
"""Option -> the standard AWS variable it defaults to."""
_FIELDS = {"access_key_id_env": "aws_access_key_id",
           "secret_access_key_env": "aws_secret_access_key",
           "session_token_env": "aws_session_token"}
_ONLY_BEDROCK = (*ENV_DEFAULTS, "aws_region", *_FIELDS.values())
"""(``region`` is Vertex AI's too: its own check refuses it on other kinds.)"""
_NOT_ON_BEDROCK = ("embeddings", "responses", "completions", "moderations", "images", "rerank")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
"""An AWS region name (``us-east-1``, ``eu-central-2``, ``us-gov-west-1``)."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def bedrock_options(name: str, kind: str, body: dict[str, Any], key_env: str,
                    env: Mapping[str, str], source: str) -> str:
    """Check the Bedrock options in a provider's ``body`` and read its credentials into it;
    the key variable startup names when unset (for Bedrock: the missing AWS variables)."""
    where = f"{source}: providers.{name}"
    if kind != BEDROCK_KIND:
        for key in _ONLY_BEDROCK:
            if key in body:
                raise ConfigError(f'{where}.{key} is only for kind = "{BEDROCK_KIND}"')
        return key_env
    for key in ("api_key", "aws_region", *_FIELDS.values()):
        if key in body:  # credentials come from the environment only
            raise ConfigError(f"{where}.{key}: Bedrock signs with an AWS key pair; name its "
                              "variables with access_key_id_env / secret_access_key_env")
    for key in _NOT_ON_BEDROCK:
        if body.get(key) is True:
            raise ConfigError(f'{where}.{key} is not served for kind = "{BEDROCK_KIND}"')
    region = body.pop("region", None)
    if not isinstance(region, str) or REGION.fullmatch(region) is None:
        raise ConfigError(f'{where}.region is required: an AWS region such as "us-east-1"')
    body["aws_region"] = region
    if not body.get("base_url"):
        body["base_url"] = f"https://bedrock-runtime.{region}.amazonaws.com"
    missing = []
    for option, default in ENV_DEFAULTS.items():
        variable = body.pop(option, default)
        if not isinstance(variable, str) or _ENV_NAME.fullmatch(variable) is None:
            raise ConfigError(f"{where}.{option} must be an environment variable name")
        value = env.get(variable, "")
        body[_FIELDS[option]] = value
        if not value and option != "session_token_env":
            missing.append(variable)
    return " and ".join(missing)
