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
    ({"server": {"port": 65536}}, "server.port"),
    ({"admin": {"port": 70000}}, "admin.port"),
    ({"server": {"host": " "}}, "server.host"),
    ({"server": {"keepalive_timeout_s": float("nan")}}, "server.keepalive_timeout_s"),
    ({"keys": [{"id": "a", "customer_id": "c", "hash": "$2b$x"}] * 2}, "keys[1].id"),
    ({"keys": [{"id": "a_b", "customer_id": "c", "hash": "$2b$x"}]}, "keys[0].id"),
    ({"keys": [{"customer_id": "c", "hash": "$2b$x"}]}, "keys[0].id"),
    ({"providers": {"x": {"kind": ["openai"]}}}, "providers.x.kind"),
    ({"providers": {"x": {"kind": "openai_compatible", "base_url": "http://h:port/v1"}}},
     "providers.x.base_url"),
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


def test_kraken_port_outside_the_tcp_range_is_refused():
    with pytest.raises(ConfigError, match="KRAKEN_PORT must be between 0 and 65535"):
        config.from_mapping({}, "<t>", env={"KRAKEN_PORT": "65536"})


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path, env={})


def test_unset_key_variables_names_only_variables_that_are_empty():
    cfg = config.from_mapping({"providers": {
        "openai": {"models": ["gpt-4o"]},
        "mistral": {"models": ["m"]},
        "groq": {"api_key": "gsk-file"},
        "local": {"kind": "openai_compatible", "base_url": "http://127.0.0.1:8000/v1"},
    }}, "<t>", env={"MISTRAL_API_KEY": "sk-set"})
    assert config.unset_key_variables(cfg) == [("openai", "OPENAI_API_KEY")]


def test_demo_refuses_a_config_key_that_takes_its_id():
    cfg = config.from_mapping({"keys": [{"id": "demo", "customer_id": "c", "hash": "$2b$x"}]},
                              "/etc/kraken/kraken.toml", env={})
    with pytest.raises(ConfigError, match=r"/etc/kraken/kraken.toml: keys: id \"demo\" is reserved"):
        config.with_demo(cfg, "$2b$y")


def test_the_stored_demo_hash_verifies_the_demo_key_and_no_other():
    from kraken.accounts.keys import check_key

    assert check_key(config.DEMO_KEY, config.DEMO_KEY_HASH)
    assert not check_key(config.DEMO_KEY[:-1] + "1", config.DEMO_KEY_HASH)


def test_config_key_ids_follow_the_key_format():
    from kraken.accounts.keys import KEY_ID_RE

    assert config.KEY_ID.pattern == KEY_ID_RE.pattern
