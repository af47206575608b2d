"""``kraken serve`` refused at startup: one line on stderr naming the file and the key, exit
status 2, never a traceback. Each case runs the real command in a subprocess."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import TEST_KEY_HASH, free_port

MOCK = '[providers.m]\nkind = "mock"\nmodels = ["mock-gpt"]\n'


def serve(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    return subprocess.run([sys.executable, "-m", "kraken", "serve", *args], cwd=cwd,
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def write_config(tmp: Path, tables: str, *, port: int = 0) -> Path:
    """``tables`` plus what they leave out: a store in ``tmp``, a listener port, a mock
    provider."""
    if "[store]" not in tables:
        tables += f'\n[store]\npath = "{tmp / "k.db"}"\n'
    if "[server]" not in tables:
        tables += f"\n[server]\nport = {port}\n"
    if "[providers." not in tables:
        tables += "\n" + MOCK
    path = tmp / "kraken.toml"
    path.write_text(tables)
    return path


def assert_one_line(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    line = lines[0]
    assert line.startswith("kraken: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def test_port_outside_the_tcp_range_names_server_port(tmp_path):
    path = write_config(tmp_path, "[server]\nport = 70000\n")
    assert_one_line(serve("--config", str(path), cwd=tmp_path), str(path), "server.port", "65535")


def test_duplicate_key_id_names_the_second_key(tmp_path):
    key = f'[[keys]]\nid = "team1"\ncustomer_id = "c"\nhash = "{TEST_KEY_HASH}"\n'
    path = write_config(tmp_path, key + key)
    assert_one_line(serve("--config", str(path), cwd=tmp_path), str(path), "keys[1].id", "team1")


def test_config_naming_a_directory(tmp_path):
    folder = tmp_path / "conf.d"
    folder.mkdir()
    assert_one_line(serve("--config", str(folder), cwd=tmp_path), str(folder), "directory")


def test_config_from_kraken_config_naming_a_directory(tmp_path):
    assert_one_line(serve(cwd=tmp_path, env={"KRAKEN_CONFIG": str(tmp_path)}), str(tmp_path),
                    "directory")


def test_port_in_use_is_one_line_naming_the_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path, "", port=port)
        line = assert_one_line(serve("--config", str(path), cwd=tmp_path), "server.port")
    assert line.startswith(f"kraken: cannot listen on 127.0.0.1:{port}: address already in use")


def test_admin_port_in_use_names_admin_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path, f'[admin]\nport = {port}\ntoken_hash = "{"a" * 64}"\n')
        line = assert_one_line(serve("--config", str(path), cwd=tmp_path), "admin.port")
    assert line.startswith(f"kraken: cannot listen on 127.0.0.1:{port}: address already in use")


def test_kraken_port_out_of_range_names_the_variable(tmp_path):
    path = write_config(tmp_path, "")
    out = serve("--config", str(path), cwd=tmp_path, env={"KRAKEN_PORT": "99999"})
    assert_one_line(out, "KRAKEN_PORT", "65535")


def test_store_path_in_a_missing_directory_names_store_path(tmp_path):
    path = write_config(tmp_path, f'[store]\npath = "{tmp_path / "nope" / "k.db"}"\n')
    assert_one_line(serve("--config", str(path), cwd=tmp_path), str(path), "store.path")


H = TEST_KEY_HASH
BAD_CONFIGS = [
    # (id, TOML, the key the one line must name)
    ("admin-port", f'[admin]\nport = 65536\ntoken_hash = "{"a" * 64}"\n', "admin.port"),
    ("redirect-port", "[server]\nport = 0\nredirect_http_port = 99999\n",
     "server.redirect_http_port"),
    ("negative-timeout", "[server]\nport = 0\nhead_timeout_s = -1\n", "server.head_timeout_s"),
    ("nan-timeout", "[server]\nport = 0\ndrain_timeout_s = nan\n", "server.drain_timeout_s"),
    ("inf-timeout", "[providers.m]\nkind = \"mock\"\nread_timeout_s = inf\n",
     "providers.m.read_timeout_s"),
    ("float-for-int", "[server]\nport = 0\nmax_body_bytes = 1.5\n", "server.max_body_bytes"),
    ("string-for-int", "[server]\nport = \"8080\"\n", "server.port"),
    ("empty-host", "[server]\nport = 0\nhost = \"\"\n", "server.host"),
    ("address-not-here", "[server]\nport = 0\nhost = \"192.0.2.1\"\n", "server.port"),
    ("unknown-kind", "[providers.m]\nkind = \"martian\"\n", "providers.m.kind"),
    ("kind-not-a-string", "[providers.m]\nkind = []\n", "providers.m.kind"),
    ("key-env-not-a-string", "[providers.m]\nkind = \"openai\"\napi_key_env = 5\n",
     "providers.m.api_key_env"),
    ("base-url-bad-port", "[providers.m]\nkind = \"openai_compatible\"\n"
     "base_url = \"http://127.0.0.1:99999/v1\"\n", "providers.m.base_url"),
    ("base-url-no-host", "[providers.m]\nkind = \"openai_compatible\"\nbase_url = \"http://\"\n",
     "providers.m.base_url"),
    ("key-id-uppercase", f'[[keys]]\nid = "Team-1"\ncustomer_id = "c"\nhash = "{H}"\n',
     "keys[0].id"),
    ("key-id-number", f'[[keys]]\nid = 5\ncustomer_id = "c"\nhash = "{H}"\n', "keys[0].id"),
    ("key-without-id", f'[[keys]]\ncustomer_id = "c"\nhash = "{H}"\n', "keys[0].id"),
    ("queue-zero", "[meter]\nqueue_max = 0\n", "meter.queue_max"),
    ("flush-zero", "[meter]\nflush_interval_ms = 0\n", "meter.flush_interval_ms"),
    ("wallet-refresh-zero", "[wallet]\nrefresh_interval_s = 0\n", "wallet.refresh_interval_s"),
    ("sampling-nan", "[logging]\nsampling = nan\n", "logging.sampling"),
    ("store-is-a-directory", "[store]\npath = \"{tmp}\"\n", "store.path"),
    ("unknown-section", "[sever]\nport = 1\n", "sever"),
    # Billing's sections are parsed at startup (kraken/billing/settings.py), in one process
    # and by the supervisor of several alike.
    ("bad-price", "[prices.mock]\n\"mock-gpt\" = { input = -1 }\n", "prices"),
    ("bad-plan", "[plans.free]\nrpm = -1\n", "plans.free.rpm"),
    ("bad-fee", "[fees]\nmanaged_pct = 150\n", "managed_pct"),
    ("bad-plan-two-workers", "[server]\nport = 0\nworkers = 2\n[plans.free]\nrpm = -1\n",
     "plans.free.rpm"),
    ("not-utf8", "\udcff", "UTF-8"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_value_is_one_line_naming_the_key(tmp_path, text, key):
    if text == "\udcff":  # not text at all
        path = tmp_path / "kraken.toml"
        path.write_bytes(b"[server]\nport = 0\n# \xff\n")
    else:
        path = write_config(tmp_path, text.replace("{tmp}", str(tmp_path)))
    out = serve("--config", str(path), cwd=tmp_path)
    line = assert_one_line(out, key)
    if not line.startswith("kraken: cannot listen"):
        assert str(path) in line


def test_unset_provider_key_variable_is_a_startup_warning(tmp_path):
    """The variable is named once at startup; a key that is set never appears."""
    port = free_port()
    path = write_config(tmp_path, '[providers.openai]\nmodels = ["gpt-4o"]\n'
                                  '[providers.mistral]\nmodels = ["mistral-small"]\n', port=port)
    canary = "sk-mistral-canary-0123456789"
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("KRAKEN_") and not k.endswith("_API_KEY")}
    err_path = tmp_path / "stderr.log"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kraken", "serve", "--config", str(path)],
                                cwd=tmp_path, env={**clean, "MISTRAL_API_KEY": canary},
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "kraken listening" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, err_path.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = err_path.read_text()
    warnings = [line for line in text.splitlines() if "is not set" in line]
    assert len(warnings) == 1, text
    assert "provider openai: OPENAI_API_KEY is not set; requests routed to it will fail" \
        in warnings[0]
    assert "WARNING" in warnings[0]
    assert canary not in text and "MISTRAL_API_KEY" not in text
