"""Config: one TOML file plus environment; every error names the key and the file."""
from __future__ import annotations

import pytest

from kraken import config
from kraken.config import ConfigError


def test_defaults_are_the_embedded_setup():
    cfg = config.from_mapping({}, "<t>", env={})
    assert (cfg.server.host, cfg.server.port, cfg.store.path) == ("127.0.0.1", 8080, "kraken.db")
    assert cfg.server.max_body_bytes == 10 * 1024 * 1024 and cfg.server.keepalive_timeout_s == 75
    assert cfg.journal_dir == "kraken.db.journal"


def test_provider_presets_and_key_from_environment():
    cfg = config.from_mapping({"providers": {"openai": {"models": ["gpt-4o"]}}}, "<t>",
                              env={"OPENAI_API_KEY": "sk-env"})
    (p,) = cfg.providers
    assert p.base_url == "https://api.openai.com/v1" and p.api_key == "sk-env" and p.kind == "openai"
    assert "sk-env" not in repr(p), "keys never appear in reprs (logs, tracebacks)"


@pytest.mark.parametrize("doc,needle", [
    ({"server": {"port": "80"}}, "server.port"),
    ({"server": {"bogus": 1}}, "server.bogus"),
    ({"nope": {}}, "nope"),
    ({"providers": {"x": {"kind": "martian"}}}, "providers.x.kind"),
    ({"providers": {"x": {"kind": "openai_compatible"}}}, "providers.x.base_url"),
    ({"providers": {"x": {"kind": "openai_compatible", "base_url": "ftp://h"}}}, "providers.x.base_url"),
    ({"keys": [{"id": "a", "customer_id": "c", "hash": "plain"}]}, "keys[0].hash"),
    ({"models": {"m": "noslash"}}, "models.m"),
    ({"models": {"m": "ghost/x"}}, "models.m"),
])
def test_errors_name_the_key_and_the_file(doc, needle):
    with pytest.raises(ConfigError) as err:
        config.from_mapping(doc, "/etc/kraken/kraken.toml", env={})
    assert needle in str(err.value) and "/etc/kraken/kraken.toml" in str(err.value)


def test_load_file_and_env_overrides(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text('[server]\nport = 9000\n[store]\npath = "a.db"\n')
    cfg = config.load(path, env={"KRAKEN_PORT": "9100"})
    assert cfg.server.port == 9100 and cfg.store.path == "a.db" and cfg.source == str(path)
    with pytest.raises(ConfigError, match="invalid TOML"):
        path.write_text("[server\n")
        config.load(path, env={})
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.toml", env={})


def test_provider_key_with_control_characters_is_refused():
    with pytest.raises(ConfigError, match="providers.x.api_key") as err:
        config.from_mapping({"providers": {"x": {"kind": "openai", "api_key": "sk-a\r\nX-Evil: 1"}}},
                            "<t>", env={})
    assert "sk-a" not in str(err.value)
