"""Presets for cohere, together, fireworks, openrouter, perplexity, ollama and vllm: each kind's
defaults (base URL, key variable, endpoints), then a real Kraken in front of the mock provider
standing in for all seven, where the mock records the credential and body each one sent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness import (
    PROVIDER_KEY,
    auth_headers,
    free_port,
    http,
    kraken_mapping,
    running_kraken,
    wait_rows,
)

from kraken import config
from kraken.accounts import byok, masterkey, service
from kraken.accounts.keys import generate_key, hash_key
from kraken.billing.pricing import PriceTable
from kraken.config import ConfigError
from kraken.mock.openai_mock import MockOpenAI
from kraken.providers.openai_compat import OpenAICompat
from kraken.store.sqlite import SqliteStore
from kraken.upstream.pool import Origin

KEY = "sk-preset-more-0123456789abcdefghij"
# kind: (key variable, host, chat target, forces stream usage, endpoints served)
EXPECTED = {
    "cohere": ("CO_API_KEY", "api.cohere.ai", "/compatibility/v1/chat/completions", False,
               {"embeddings", "rerank"}),
    "together": ("TOGETHER_API_KEY", "api.together.xyz", "/v1/chat/completions", True,
                 {"embeddings", "completions", "rerank"}),
    "fireworks": ("FIREWORKS_API_KEY", "api.fireworks.ai", "/inference/v1/chat/completions", True,
                  {"embeddings", "completions"}),
    "openrouter": ("OPENROUTER_API_KEY", "openrouter.ai", "/api/v1/chat/completions", True,
                   {"completions"}),
    "perplexity": ("PERPLEXITY_API_KEY", "api.perplexity.ai", "/chat/completions", False, set()),
    "ollama": ("", "localhost:11434", "/v1/chat/completions", True, {"embeddings", "completions"}),
    "vllm": ("", "localhost:8000", "/v1/chat/completions", True,
             {"embeddings", "completions", "rerank"}),
}
HOSTED = sorted(k for k, v in EXPECTED.items() if v[0])
LOCAL = sorted(k for k, v in EXPECTED.items() if not v[0])
ENDPOINTS = ("embeddings", "responses", "completions", "moderations", "images", "rerank")


def family(kind: str, env: dict[str, str] | None = None, **extra) -> OpenAICompat:
    cfg = config.from_mapping({"providers": {"p": {"kind": kind, **extra}}}, "<t>",
                              env={EXPECTED[kind][0]: KEY} if env is None else env)
    p = cfg.providers[0]
    origin = Origin(p.base_url)
    return OpenAICompat(p, origin.base_path, origin.authority)


def header(headers, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_preset_defaults(kind):
    key_env, host, target, forces, serves = EXPECTED[kind]
    fam = family(kind)
    assert fam.cfg.api_key_env == key_env
    assert fam.cfg.api_key == (KEY if key_env else "")
    req = fam.chat_request({"model": "m", "stream": True, "messages": []}, "up")
    assert req.target == target
    assert header(req.headers, b"host") == host.encode()
    assert header(req.headers, b"authorization") == (b"Bearer " + KEY.encode() if key_env else None)
    assert ("stream_options" in json.loads(req.body)) is forces and req.hide_usage is forces
    assert {e for e in ENDPOINTS if getattr(fam.cfg, e)} == serves


@pytest.mark.parametrize("kind", LOCAL)
def test_local_kinds_send_a_key_only_when_one_is_configured(kind):
    fam = family(kind, env={}, api_key="vllm-server-key", base_url="http://gpu1.lan:8000/v1")
    req = fam.chat_request({"model": "m", "messages": []}, "m")
    assert header(req.headers, b"authorization") == b"Bearer vllm-server-key"
    assert header(req.headers, b"host") == b"gpu1.lan:8000"


def test_unset_key_variables_name_hosted_kinds_only():
    providers = {kind: {"kind": kind} for kind in EXPECTED}
    cfg = config.from_mapping({"providers": providers}, "<t>", env={})
    assert sorted(config.unset_key_variables(cfg)) == sorted(
        (kind, EXPECTED[kind][0]) for kind in HOSTED)


def test_openrouter_attribution_is_checked_and_only_for_openrouter():
    fam = family("openrouter", referer="https://app.example", title="Example App")
    assert header(fam.headers_for(None), b"http-referer") == b"https://app.example"
    assert header(fam.headers_for("sk-customer"), b"x-title") == b"Example App", "BYOK keeps it"
    assert header(family("together").headers_for(None), b"x-title") is None
    with pytest.raises(ConfigError, match="providers.p.title"):
        family("together", title="x")
    with pytest.raises(ConfigError, match="providers.p.referer"):
        family("openrouter", referer="https://a\r\nx-injected: 1")


def test_hosted_kinds_accept_byok_and_local_ones_do_not():
    for kind in HOSTED:
        assert byok.provider(kind) == kind
    for kind in LOCAL:
        with pytest.raises(byok.ValidationError):
            byok.provider(kind)


@pytest.mark.parametrize("kind, model", [
    ("cohere", "command-a-03-2025"), ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("fireworks", "accounts/fireworks/models/llama-v3p1-8b-instruct"), ("perplexity", "sonar-pro")])
def test_shipped_prices(kind, model):
    price = PriceTable.load().lookup(kind, model)
    assert price is not None and price.input > 0 and price.output > 0


# ---- through a real Kraken ------------------------------------------------------------------


def model(kind: str) -> str:
    return f"m-{kind}"


def document(tmp: Path, keyed: MockOpenAI, keyless: MockOpenAI) -> dict:
    doc = kraken_mapping(tmp, keyed.port)
    providers = {}
    for kind in EXPECTED:
        mock = keyless if kind in LOCAL else keyed
        entry = {"kind": kind, "base_url": mock.url, "models": [model(kind)],
                 "read_timeout_s": 5.0, "connect_timeout_s": 2.0}
        if kind in HOSTED:
            entry["api_key"] = PROVIDER_KEY
        if kind == "openrouter":
            entry.update(referer="https://app.example", title="Example App")
        providers[kind] = entry
    doc["providers"] = providers
    return doc


async def post(port: int, kind: str, stream: bool):
    body = {"model": model(kind), "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]}
    reply = await http(port, "POST", "/v1/chat/completions", json.dumps(body).encode(),
                       {**auth_headers(), "content-type": "application/json"})
    assert reply.status == 200, reply.body
    return reply


@pytest.mark.anyio
async def test_each_kind_through_kraken(tmp_path):
    keyed = MockOpenAI(api_key=PROVIDER_KEY)
    keyless = MockOpenAI()
    await keyed.start()
    await keyless.start()
    try:
        async with running_kraken(document(tmp_path, keyed, keyless)) as k:
            for kind in sorted(EXPECTED):
                mock = keyless if kind in LOCAL else keyed
                forces = EXPECTED[kind][3]
                await post(k.port, kind, stream=True)
                sent = mock.requests[-1]
                assert sent.json()["model"] == model(kind)
                assert sent.header(b"authorization") == (
                    None if kind in LOCAL else b"Bearer " + PROVIDER_KEY.encode()), kind
                assert ("stream_options" in sent.json()) is forces, kind
                reply = await post(k.port, kind, stream=False)
                assert reply.body == mock.responses[-1].body, "relayed byte for byte"
                if kind == "openrouter":
                    assert mock.requests[-1].header(b"http-referer") == b"https://app.example"
                    assert mock.requests[-1].header(b"x-title") == b"Example App"
                else:
                    assert mock.requests[-1].header(b"x-title") is None
            rows = await wait_rows(k.db_path, 2 * len(EXPECTED))
    finally:
        await keyed.close()
        await keyless.close()
    for kind in EXPECTED:
        mine = [r for r in rows if r["provider"] == kind]
        assert len(mine) == 2 and all(r["status"] == 200 for r in mine), kind
        with_tokens = [r for r in mine if r["prompt_tokens"] == 12 and r["completion_tokens"] == 20]
        # a forced stream reports usage through the mock; an "always" kind's stream is the mock's
        # OpenAI stream without stream_options (no usage), so only its non-stream call has tokens
        assert len(with_tokens) == (2 if EXPECTED[kind][3] else 1), kind


def test_startup_warns_for_hosted_kinds_without_keys_and_not_for_local_ones(tmp_path):
    tables = "".join(f'[providers.{kind}]\nmodels = ["{model(kind)}"]\n' for kind in EXPECTED)
    tables += f'[store]\npath = "{tmp_path / "k.db"}"\n[server]\nport = {free_port()}\n'
    path = tmp_path / "kraken.toml"
    path.write_text(tables)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("KRAKEN_") and k not in {v[0] for v in EXPECTED.values()}}
    proc = subprocess.Popen([sys.executable, "-m", "kraken", "serve", "--config", str(path)],
                            cwd=tmp_path, env=clean, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:  # blocks until the listener is up (or the process exits)
            lines.append(line)
            if "kraken listening" in line:
                break
        proc.send_signal(signal.SIGTERM)
        lines.extend(proc.stderr)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    warnings = [line for line in lines if "is not set" in line]
    assert sorted(w.split("provider ", 1)[1].split(":", 1)[0] for w in warnings) == HOSTED, lines
    for kind in HOSTED:
        assert any(f"provider {kind}: {EXPECTED[kind][0]} is not set" in w for w in warnings)


@pytest.mark.anyio
async def test_byok_key_reaches_each_hosted_kind_as_bearer(tmp_path):
    """A customer's own key replaces the operator's for every hosted kind; others keep it."""
    own = "sk-customer-own-presets-5d1c0a9e77"
    key_a, key_b = generate_key("presa", env="test"), generate_key("presb", env="test")
    key_file = tmp_path / "master.keys"
    key_file.write_text(masterkey.new_entry(1))
    key_file.chmod(0o600)
    store = await SqliteStore.open(str(tmp_path / "kraken.db"))
    try:
        a = (await service.create_customer(store, "a@example.com")).id
        b = (await service.create_customer(store, "b@example.com")).id
        keyring = masterkey.load(str(key_file), "")
        for kind in HOSTED:
            await byok.set_key(store, keyring, a, kind, own)
    finally:
        await store.close()
    keyed, keyless = MockOpenAI(api_key=PROVIDER_KEY), MockOpenAI()
    keyed.accept_key(own)
    await keyed.start()
    await keyless.start()
    try:
        doc = document(tmp_path, keyed, keyless)
        doc["byok"] = {"master_key_file": str(key_file), "poll_interval_s": 0.25}
        doc["keys"] = [{"id": "presa", "hash": hash_key(key_a, rounds=4), "customer_id": a},
                       {"id": "presb", "hash": hash_key(key_b, rounds=4), "customer_id": b}]
        async with running_kraken(doc) as k:
            for kind in HOSTED:
                body = json.dumps({"model": model(kind), "messages": [
                    {"role": "user", "content": "hi"}]}).encode()
                for key, expected in ((key_a, own), (key_b, PROVIDER_KEY)):
                    reply = await http(k.port, "POST", "/v1/chat/completions", body,
                                       {**auth_headers(key), "content-type": "application/json"})
                    assert reply.status == 200, reply.body
                    assert keyed.requests[-1].header(b"authorization") == (
                        b"Bearer " + expected.encode()), kind
            rows = await wait_rows(k.db_path, 2 * len(HOSTED))
    finally:
        await keyed.close()
        await keyless.close()
    assert sorted((r["provider"], r["customer_id"], r["byok"]) for r in rows) == sorted(
        [(kind, a, 1) for kind in HOSTED] + [(kind, b, 0) for kind in HOSTED])
