"""kind = "azure_openai" in the config file and the price table: the names the README gives,
their defaults, and the errors that name the key."""
from __future__ import annotations

import pytest

from kraken import config
from kraken.billing.pricing import PriceTable
from kraken.config import ConfigError

BASE = "https://res.openai.azure.com"


def azure(env: dict | None = None, **provider) -> config.ProviderConfig:
    doc = {"providers": {"az": {"kind": "azure_openai", "base_url": BASE, **provider}}}
    return config.from_mapping(doc, "k.toml", env=env or {}).providers[0]


def test_defaults_models_from_deployments_and_key_from_its_variable():
    p = azure({"AZURE_OPENAI_API_KEY": "k1"}, deployments={"gpt-4o-mini": "mini-dep"})
    assert p.models == ("gpt-4o-mini",) and p.deployments == {"gpt-4o-mini": "mini-dep"}
    assert (p.api_version, p.auth, p.api_key, p.api_key_env) == (
        "2024-10-21", "api-key", "k1", "AZURE_OPENAI_API_KEY")


def test_entra_token_comes_from_its_own_variable_and_is_named_when_unset():
    p = azure({"MY_TOKEN": "t1"}, auth="azure_ad", azure_ad_token_env="MY_TOKEN", models=["gpt-4o"])
    assert (p.api_key, p.api_key_env) == ("t1", "MY_TOKEN")
    cfg = config.from_mapping({"providers": {"az": {
        "kind": "azure_openai", "base_url": BASE, "auth": "azure_ad", "models": ["m"]}}},
        "k.toml", env={"AZURE_OPENAI_API_KEY": "unused"})
    assert config.unset_key_variables(cfg) == [("az", "AZURE_OPENAI_AD_TOKEN")]


@pytest.mark.parametrize("provider,named", [
    ({"deployments": {"gpt-4o": "../admin"}}, "providers.az.deployments"),
    ({"models": ["gpt 4o"]}, "providers.az.models"),
    ({"api_version": "latest&x=1"}, "providers.az.api_version"),
    ({"auth": "bearer"}, "providers.az.auth"),
    ({"responses": True}, "providers.az.responses"),
    ({"base_url": ""}, "providers.az.base_url"),
])
def test_bad_azure_options_name_the_key(provider, named):
    with pytest.raises(ConfigError, match=rf"^k\.toml: {named}"):
        azure(**provider)


@pytest.mark.parametrize("key", ["api_version", "deployments", "auth", "azure_ad_token_env"])
def test_azure_options_are_refused_on_other_kinds(key):
    value = {"deployments": {"a": "b"}}.get(key, "2024-10-21")
    with pytest.raises(ConfigError, match=f"providers.openai.{key} is only for kind"):
        config.from_mapping({"providers": {"openai": {key: value}}}, "k.toml", env={})


def test_azure_bills_openais_prices_unless_it_has_its_own():
    shipped = PriceTable.load()
    assert shipped.lookup("azure_openai", "gpt-4o-mini") == shipped.lookup("openai", "gpt-4o-mini")
    assert shipped.lookup("azure_openai", "gpt-4o-mini-2024-07-18") is not None
    assert shipped.lookup("azure_openai", "claude-sonnet-4-5") is None
    assert "azure_openai" in shipped.provider_kinds
    own = PriceTable.load({"azure_openai": {"gpt-4o-mini": {"input": 0.2, "output": 0.8}}})
    assert str(own.lookup("azure_openai", "gpt-4o-mini").input) == "0.2"
    assert own.lookup("azure_openai", "gpt-4o") == own.lookup("openai", "gpt-4o")
