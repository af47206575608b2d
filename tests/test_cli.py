"""The kraken command as a user runs it."""
from __future__ import annotations

import subprocess
import sys

from kraken.accounts.keys import check_key, generate_key


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_keys_hash_reads_the_key_from_stdin():
    key = generate_key("abc")
    out = run("keys", "hash", "--rounds", "4", stdin=key + "\n")
    assert out.returncode == 0
    hashed = out.stdout.strip()
    assert hashed.startswith("$2") and check_key(key, hashed)
    assert key not in out.stdout + out.stderr


def test_keys_hash_refuses_a_non_key():
    out = run("keys", "hash", stdin="hello\n")
    assert out.returncode == 2 and "not a Kraken key" in out.stderr


def test_keys_new_prints_a_block_that_verifies():
    out = run("keys", "new", "--id", "team1", "--customer", "acme", "--rounds", "4")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    key = lines[0].split(": ", 1)[1]
    hashed = [l for l in lines if l.startswith("hash = ")][0].split('"')[1]
    assert key.startswith("kr_live_team1_") and check_key(key, hashed)
    assert 'customer_id = "acme"' in out.stdout


def test_serve_with_bad_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[server]\nport = 'x'\n")
    out = run("serve", "--config", str(path))
    assert out.returncode == 2 and "server.port" in out.stderr


def _options(parser, path=("kraken",)):
    """(command path, option) for every argument of every subcommand, hidden ones left out."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + (name,))
        elif action.help != argparse.SUPPRESS and not isinstance(
                action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path), "/".join(action.option_strings) or action.dest, action.help


def test_every_option_of_every_subcommand_has_help():
    from kraken.cli import build_parser

    options = list(_options(build_parser()))
    assert len(options) > 50 and any(cmd == "kraken serve" for cmd, _, _ in options)
    missing = [f"{cmd} {name}" for cmd, name, text in options if not (text or "").strip()]
    assert not missing, "options without help: " + ", ".join(missing)


def test_serve_help_explains_where_it_listens_and_the_environment():
    out = run("serve", "--help")
    assert out.returncode == 0
    text = out.stdout
    for needle in ("--host", "--port", "KRAKEN_HOST", "KRAKEN_PORT", "KRAKEN_DB", "KRAKEN_CONFIG",
                   "127.0.0.1", "8080"):
        assert needle in text, needle
    for option, variable in (("--host HOST", "KRAKEN_HOST"), ("--port PORT", "KRAKEN_PORT")):
        block = text.split(f"\n  {option}", 1)[1].split("\n  -", 1)[0]
        assert variable in " ".join(block.split()), (option, block)  # said on the option itself


def test_serve_port_out_of_range_on_the_command_line_is_refused():
    out = run("serve", "--port", "70000")
    assert out.returncode == 2 and "65535" in out.stderr and "Traceback" not in out.stderr


def test_a_store_that_cannot_be_opened_is_one_line_naming_it_not_a_traceback(tmp_path):
    path = tmp_path / "k.toml"
    missing = tmp_path / "no-such-dir" / "kraken.db"
    path.write_text(f'[store]\npath = "{missing}"\n')
    for command in (("customers", "list"), ("keys", "list"), ("usage",), ("audit", "verify"),
                    ("wallet", "balance", "cus_x"), ("byok", "list")):
        out = run(*command, "--config", str(path))
        assert out.returncode in (1, 3), (command, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1, out.stderr
        assert "store.path" in out.stderr and str(missing) in out.stderr, out.stderr
