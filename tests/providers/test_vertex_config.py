"""kind = "vertex" configuration (kraken/config/vertex.py) and prices: what is checked, what is
defaulted, and how Vertex models are priced."""
from __future__ import annotations

import pytest

from kraken.billing.pricing import PriceTable
from kraken.config import ConfigError, from_mapping


def provider(env=None, **fields):
    doc = {"providers": {"vx": {"kind": "vertex", "project": "my-project-42",
                                "region": "us-central1", "models": ["gemini-2.5-flash"],
                                **fields}}}
    return from_mapping(doc, "k.toml", env=env or {}).providers[0]


def test_the_base_url_follows_the_region_and_global_has_no_prefix():
    assert provider().base_url == "https://us-central1-aiplatform.googleapis.com"
    assert provider(region="global").base_url == "https://aiplatform.googleapis.com"
    assert provider(base_url="http://127.0.0.1:9/").base_url == "http://127.0.0.1:9/"


def test_the_key_file_comes_from_the_config_or_google_application_credentials():
    assert provider(env={"GOOGLE_APPLICATION_CREDENTIALS": "/etc/k.json"}).credentials_file \
        == "/etc/k.json"
    chosen = provider(env={"GOOGLE_APPLICATION_CREDENTIALS": "/etc/k.json"},
                      credentials_file="/srv/sa.json")
    assert chosen.credentials_file == "/srv/sa.json"
    assert provider().credentials_file == ""  # allowed: a startup warning, 503 on requests


@pytest.mark.parametrize("fields, message", [
    ({"project": "Bad_Project"}, "providers.vx.project must be a Google Cloud project id"),
    ({"project": "a/../b-proj"}, "providers.vx.project must be"),
    ({"region": "us-central1/../x"}, "providers.vx.region must be a region"),
    ({"region": None}, "providers.vx.region must be a region"),
    ({"api_key": "AIzaSy-something"}, "providers.vx.api_key: Vertex AI takes no API key"),
    ({"embeddings": True}, "providers.vx.embeddings is not served"),
    ({"credentials_file": 3}, "providers.vx.credentials_file must be a path"),
])
def test_bad_vertex_options_name_the_key_and_the_file(fields, message):
    table = {"kind": "vertex", "project": "my-project-42", "region": "us-central1", **fields}
    table = {k: v for k, v in table.items() if v is not None}  # None: the key left out
    with pytest.raises(ConfigError) as caught:
        from_mapping({"providers": {"vx": table}}, "k.toml", env={})
    assert str(caught.value).startswith("k.toml: ") and message in str(caught.value)


@pytest.mark.parametrize("key", ["project", "region", "credentials_file"])
def test_vertex_options_are_refused_on_other_kinds(key):
    doc = {"providers": {"oa": {"kind": "openai", key: "us-central1"}}}
    with pytest.raises(ConfigError, match=f'providers.oa.{key} is only for kind = "vertex"'):
        from_mapping(doc, "k.toml", env={})


def test_vertex_models_are_priced_from_the_vertex_table():
    prices = PriceTable.load()
    flash = prices.lookup("vertex", "gemini-2.0-flash")
    assert (str(flash.input), str(flash.output)) == ("0.15", "0.60")  # Vertex's, not AI Studio's
    sonnet = prices.lookup("vertex", "claude-sonnet-4-5@20250929")  # a Vertex model version
    assert (str(sonnet.input), str(sonnet.cache_write), str(sonnet.output)) == \
        ("3.00", "3.75", "15.00")
    assert prices.lookup("vertex", "gemini-2.5-pro").long_context_above == 200000
