"""The ``kraken`` command: serve, and key tooling. Argument parsing only; no business logic."""
from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import sys
from typing import TYPE_CHECKING

from kraken import __version__

if TYPE_CHECKING:
    from kraken.config import Config


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from kraken import app, config
    from kraken.gateway.keys import hash_key

    try:
        cfg = config.load(args.config)
        if args.host or args.port is not None:
            server = dataclasses.replace(
                cfg.server,
                host=args.host or cfg.server.host,
                port=cfg.server.port if args.port is None else args.port,
            )
            cfg = dataclasses.replace(cfg, server=server)
        if args.worker_count is not None:  # the supervisor's count, not a re-read file's
            server = dataclasses.replace(cfg.server, workers=args.worker_count)
            cfg = dataclasses.replace(cfg, server=server)
        if args.demo:
            cfg = config.with_demo(cfg, hash_key(config.DEMO_KEY, rounds=10))
        if args.log_level:  # the command line wins over [logging] level
            cfg = dataclasses.replace(cfg, logging=dataclasses.replace(
                cfg.logging, level=args.log_level.upper()))
    except config.ConfigError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    from kraken.logs import setup_process_logging

    setup_process_logging(cfg.logging, worker=args.worker_index)
    if not cfg.providers:
        print("kraken: no providers configured (add [providers.*] to kraken.toml, or use --demo)",
              file=sys.stderr)
        return 2
    if args.worker_index is None and cfg.server.workers > 1:
        return _supervise(args, cfg)
    if args.demo and args.worker_index is None:
        print(f"kraken demo: use API key {config.DEMO_KEY} (accepted only with --demo)",
              file=sys.stderr)
    from kraken.accounts.masterkey import KeyringError
    from kraken.http.tls import TLSConfigError

    if args.worker_index is not None:
        from kraken import workers

        workers.follow_supervisor()
    try:
        return uvloop.run(app.serve(cfg, worker=args.worker_index))
    except (TLSConfigError, KeyringError) as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2


def _supervise(args: argparse.Namespace, cfg: Config) -> int:
    """``workers > 1``: this process only supervises ``kraken serve --worker-index i``."""
    from kraken import config, workers

    if cfg.server.port == 0:
        print("kraken: server.workers > 1 needs a fixed server.port (the workers share it)",
              file=sys.stderr)
        return 2
    if args.demo:
        print(f"kraken demo: use API key {config.DEMO_KEY} (accepted only with --demo)",
              file=sys.stderr)
    count = cfg.server.workers

    def command(index: int) -> list[str]:
        argv = [sys.executable, "-m", "kraken"]
        argv += ["--log-level", args.log_level] if args.log_level else []
        argv.append("serve")
        if cfg.source != "<defaults>":
            argv += ["--config", os.path.abspath(cfg.source)]
        # Pinned: every worker listens where the supervisor said it would.
        argv += ["--host", cfg.server.host, "--port", str(cfg.server.port)]
        if args.demo:
            argv.append("--demo")
        return argv + ["--worker-index", str(index), "--worker-count", str(count)]

    return workers.Supervisor(count, command, drain_timeout_s=cfg.server.drain_timeout_s).run()


def _keys_hash(args: argparse.Namespace) -> int:
    from kraken.gateway.keys import hash_key, parse_key

    key = args.key if args.key else (
        getpass.getpass("Kraken key: ") if sys.stdin.isatty() else sys.stdin.readline().strip())
    if parse_key(key) is None:
        print("kraken: not a Kraken key (expected kr_live_<id>_<secret>)", file=sys.stderr)
        return 2
    print(hash_key(key, rounds=args.rounds))
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    from kraken.gateway.keys import generate_key, hash_key, parse_key

    try:
        key = generate_key(args.id, env=args.env)
    except ValueError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    key_id, _ = parse_key(key)
    print(f"# the key (shown once): {key}")
    print("[[keys]]")
    print(f'id = "{key_id}"')
    print(f'customer_id = "{args.customer}"')
    print(f'hash = "{hash_key(key, rounds=args.rounds)}"')
    return 0


def _top(args: argparse.Namespace) -> int:
    from kraken import top

    return top.run(args.url, args.interval, args.once)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kraken", description="Kraken LLM API gateway")
    parser.add_argument("--version", action="version", version=f"kraken {__version__}")
    parser.add_argument("--log-level", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                        help="overrides [logging] level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML file (default: $KRAKEN_CONFIG or ./kraken.toml)")
    serve.add_argument("--demo", action="store_true",
                       help="add a built-in mock provider and the documented demo key")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    # Set by the supervisor (server.workers > 1) on the processes it starts.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="Kraken API key tooling").add_subparsers(
        dest="keys_command", required=True)
    hash_cmd = keys.add_parser("hash", help="print the bcrypt hash of a key (from stdin)")
    hash_cmd.add_argument("key", nargs="?", help="the key (prefer stdin: argv is visible in ps)")
    hash_cmd.add_argument("--rounds", type=int, default=12)
    hash_cmd.set_defaults(func=_keys_hash)
    new_cmd = keys.add_parser("new", help="make a new key and print its [[keys]] block")
    new_cmd.add_argument("--id")
    new_cmd.add_argument("--customer", default="default")
    new_cmd.add_argument("--env", choices=("live", "test"), default="live")
    new_cmd.add_argument("--rounds", type=int, default=12)
    new_cmd.set_defaults(func=_keys_new)

    from kraken.accounts import cli as accounts_cli

    accounts_cli.add_parsers(sub, keys)  # customers ...; keys create|list|revoke|delete

    from kraken.billing import wallet_cli

    wallet_cli.add_parser(sub)

    from kraken.admin import cli as admin_cli

    admin_cli.add_parsers(sub)

    from kraken.accounts import byok_cli

    byok_cli.add_parser(sub)

    top_cmd = sub.add_parser("top", help="live view of a running Kraken (from its /metrics)")
    top_cmd.add_argument("--url", default="http://127.0.0.1:8080/metrics",
                         help="the metrics endpoint (default %(default)s)")
    top_cmd.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top_cmd.add_argument("--once", action="store_true", help="print one frame and exit")
    top_cmd.set_defaults(func=_top)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Workers share the supervisor's stderr (one journald stream): say which one speaks.
    worker = getattr(args, "worker_index", None)
    who = "%(name)s" if worker is None else f"%(name)s[worker-{worker}]"
    logging.basicConfig(level=args.log_level or "INFO", stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {who} %(message)s")
    # aiosqlite logs every statement with its parameters at DEBUG (key ids, emails, ...).
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    return args.func(args)
