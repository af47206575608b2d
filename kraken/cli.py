"""The ``kraken`` command: serve, and key tooling. Argument parsing only; no business logic."""
from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import sys

from kraken import __version__


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
        if args.demo:
            cfg = config.with_demo(cfg, hash_key(config.DEMO_KEY, rounds=10))
    except config.ConfigError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    if not cfg.providers:
        print("kraken: no providers configured (add [providers.*] to kraken.toml, or use --demo)",
              file=sys.stderr)
        return 2
    if args.demo:
        print(f"kraken demo: use API key {config.DEMO_KEY} (accepted only with --demo)",
              file=sys.stderr)
    from kraken.http.tls import TLSConfigError

    try:
        return uvloop.run(app.serve(cfg))
    except TLSConfigError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kraken", description="Kraken LLM API gateway")
    parser.add_argument("--version", action="version", version=f"kraken {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="TOML file (default: $KRAKEN_CONFIG or ./kraken.toml)")
    serve.add_argument("--demo", action="store_true",
                       help="add a built-in mock provider and the documented demo key")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return args.func(args)
