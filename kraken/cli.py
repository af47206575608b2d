"""The ``kraken`` command: serve, and key tooling. Argument parsing only; no business logic."""
from __future__ import annotations

import argparse
import dataclasses
import getpass
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kraken.config import Config


def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from kraken import app, config

    try:
        cfg = _serve_config(args)
    except config.ConfigError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    from kraken.fdtable import reserve_descriptors
    from kraken.logs import setup_process_logging

    reserve_descriptors()  # while this process has one thread: the log writer's comes next
    setup_process_logging(cfg.logging, worker=args.worker_index)
    if not cfg.providers:
        print("kraken: no providers configured (add [providers.*] to kraken.toml, or use --demo)",
              file=sys.stderr)
        return 2
    if args.worker_index is None:  # once, not once per worker
        _warn_unset_keys(cfg)
        if cfg.store.backend == "sqlite":
            from kraken.private import warn_if_exposed

            warn_if_exposed(cfg.store.path)
        if cfg.server.workers > 1:
            return _supervise(args, cfg)
        if args.demo:
            print(f"kraken demo: use API key {config.DEMO_KEY} (accepted only with --demo)",
                  file=sys.stderr)
    from kraken.accounts.masterkey import KeyringError
    from kraken.http.listener import ListenError
    from kraken.http.tls import TLSConfigError

    if args.worker_index is not None:
        from kraken import workers

        workers.follow_supervisor()
    try:
        return uvloop.run(app.serve(cfg, worker=args.worker_index))
    except (TLSConfigError, KeyringError, config.ConfigError, ListenError) as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2


def _serve_config(args: argparse.Namespace) -> Config:
    """The config file with the command line's overrides (--host/--port, --demo, --log-level)."""
    from kraken import config

    cfg = config.load(args.config)
    if args.host or args.port is not None:
        server = dataclasses.replace(
            cfg.server,
            host=args.host or cfg.server.host,
            port=cfg.server.port if args.port is None else args.port,
        )
        cfg = dataclasses.replace(cfg, server=server)
    if args.worker_count is not None:  # the supervisor's count, not a re-read file's
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server,
                                                                  workers=args.worker_count))
    if args.demo:
        cfg = config.with_demo(cfg, config.DEMO_KEY_HASH)
    if args.log_level:  # the command line wins over [logging] level
        cfg = dataclasses.replace(cfg, logging=dataclasses.replace(
            cfg.logging, level=args.log_level.upper()))
    return cfg


def _warn_unset_keys(cfg: Config) -> None:
    """A provider whose key variable is unset is named at startup (the variable, never a value)."""
    from kraken import config

    for name, variable in config.unset_key_variables(cfg):
        logging.getLogger("kraken").warning(
            "provider %s: %s is not set; requests routed to it will fail "
            "(except with a customer's own BYOK key)", name, variable)


def _supervise(args: argparse.Namespace, cfg: Config) -> int:
    """``workers > 1``: this process only supervises ``kraken serve --worker-index i``."""
    from kraken import config, workers

    from kraken.billing.settings import billing_settings

    try:  # the workers parse these for themselves; a bad one must stop the supervisor
        billing_settings(cfg)
    except config.ConfigError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    if cfg.server.port == 0:
        print(f"kraken: {cfg.source}: server.workers > 1 needs a fixed server.port "
              "(the workers share it)", file=sys.stderr)
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
    from kraken.accounts.keys import hash_key, parse_key

    key = args.key if args.key else (
        getpass.getpass("Kraken key: ") if sys.stdin.isatty() else sys.stdin.readline().strip())
    if parse_key(key) is None:
        print("kraken: not a Kraken key (expected kr_live_<id>_<secret>)", file=sys.stderr)
        return 2
    print(hash_key(key, rounds=args.rounds))
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    from kraken.accounts.keys import generate_key, hash_key, parse_key

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

    url = args.url
    if url is None:
        from kraken import clikit

        cfg = clikit.load_config(args.config)
        if cfg is None:
            return 2
        url = top.metrics_url(cfg)
    return top.run(url, args.interval, args.once)


def _port(text: str) -> int:
    """``--port``: an integer 0-65535 (argparse prints the error, exit 2)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not between 0 and 65535")
    return port


SERVE_DESCRIPTION = """\
Run the gateway: the client API on [server] host:port, the admin API on [admin] host:port
(only when [admin] token_hash is set).

Where it listens, highest precedence first: --host/--port, then $KRAKEN_HOST/$KRAKEN_PORT,
then [server] host/port in the config file, then 127.0.0.1:8080."""

SERVE_ENVIRONMENT = """\
environment:
  KRAKEN_CONFIG   config file when --config is not given (else ./kraken.toml if present,
                  else built-in defaults)
  KRAKEN_HOST     overrides [server] host
  KRAKEN_PORT     overrides [server] port
  KRAKEN_DB       overrides [store] path (the SQLite file)
  provider keys   OPENAI_API_KEY, ANTHROPIC_API_KEY, MISTRAL_API_KEY, GROQ_API_KEY,
                  DEEPSEEK_API_KEY, XAI_API_KEY, GEMINI_API_KEY (or [providers.*] api_key_env)
exit status 2: a configuration or startup error, said in one line on stderr
(kraken: <file>: <key> ..., or kraken: cannot listen on HOST:PORT: <reason>)"""


class _Version(argparse.Action):
    """``--version``: Kraken's and what it runs on (kraken.buildinfo), read only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):
        from kraken.buildinfo import describe

        print(describe())  # stdout, as argparse's own version action
        parser.exit()


def build_parser(only_serve: bool = False) -> argparse.ArgumentParser:
    """Every subcommand; ``only_serve``: serve alone, so that starting the gateway does not
    import and build the operator commands' parsers (start-up time and memory)."""
    parser = argparse.ArgumentParser(prog="kraken", description="Kraken LLM API gateway")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the version, the Python build and the C speedups' state, "
                             "and exit")
    parser.add_argument("--log-level", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                        help="overrides [logging] level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_serve(sub)
    if only_serve:
        return parser

    keys = sub.add_parser("keys", help="Kraken API key tooling").add_subparsers(
        dest="keys_command", required=True)
    hash_cmd = keys.add_parser("hash", help="print the bcrypt hash of a key (from stdin)")
    hash_cmd.add_argument("key", nargs="?", help="the key (prefer stdin: argv is visible in ps)")
    hash_cmd.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12)")
    hash_cmd.set_defaults(func=_keys_hash)
    new_cmd = keys.add_parser("new", help="make a new key and print its [[keys]] block")
    new_cmd.add_argument("--id", help="the key id, 1-32 of a-z0-9 (default: random)")
    new_cmd.add_argument("--customer", default="default",
                         help="customer_id the key bills to (default %(default)s)")
    new_cmd.add_argument("--env", choices=("live", "test"), default="live",
                         help="kr_live_ or kr_test_ prefix (default %(default)s)")
    new_cmd.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12)")
    new_cmd.set_defaults(func=_keys_new)

    from kraken.cli_commands import accounts as accounts_cli

    accounts_cli.add_parsers(sub, keys)  # customers ...; keys create|list|revoke|delete

    from kraken.cli_commands import wallet as wallet_cli

    wallet_cli.add_parser(sub)

    from kraken.cli_commands import admin as admin_cli

    admin_cli.add_parsers(sub)

    from kraken.cli_commands import byok as byok_cli

    byok_cli.add_parser(sub)

    from kraken.cli_commands import migrate as migrate_cli

    migrate_cli.add_parser(sub)

    _add_top(sub)
    return parser


def _add_serve(sub: argparse._SubParsersAction) -> None:
    """``kraken serve``: its --help is where a newcomer learns where it listens."""
    serve = sub.add_parser("serve", help="run the gateway", description=SERVE_DESCRIPTION,
                           epilog=SERVE_ENVIRONMENT,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--config", help="TOML file (default: $KRAKEN_CONFIG or ./kraken.toml)")
    serve.add_argument("--demo", action="store_true",
                       help="add a built-in mock provider and the documented demo key")
    serve.add_argument("--host", help="address to listen on; overrides [server] host and "
                       "$KRAKEN_HOST (default 127.0.0.1; 0.0.0.0 or :: for every interface)")
    serve.add_argument("--port", type=_port, help="port to listen on; overrides [server] port "
                       "and $KRAKEN_PORT (default 8080; 0 picks a free one)")
    # Set by the supervisor (server.workers > 1) on the processes it starts.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-count", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)


def _add_top(sub: argparse._SubParsersAction) -> None:
    """``kraken top``: without --url it finds /metrics the way serve finds its port."""
    top_cmd = sub.add_parser("top", help="live view of a running Kraken (from its /metrics)")
    top_cmd.add_argument("--url", help="the metrics endpoint (default: http://HOST:PORT/metrics "
                         "from the config's [server] and $KRAKEN_HOST/$KRAKEN_PORT, as serve "
                         "reads them)")
    top_cmd.add_argument("--config", help="TOML file to read [server] from (default: "
                         "$KRAKEN_CONFIG or ./kraken.toml); ignored with --url")
    top_cmd.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top_cmd.add_argument("--once", action="store_true", help="print one frame and exit")
    top_cmd.set_defaults(func=_top)


def _command_word(argv: list[str]) -> str | None:
    """The subcommand argv names, seen past the top-level options (None: none given)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from kraken.private import restrict_umask

    restrict_umask()  # before any file is made
    args = build_parser(only_serve=_command_word(argv) == "serve").parse_args(argv)
    # Workers share the supervisor's stderr (one journald stream): say which one speaks.
    worker = getattr(args, "worker_index", None)
    who = "%(name)s" if worker is None else f"%(name)s[worker-{worker}]"
    logging.basicConfig(level=args.log_level or "INFO", stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {who} %(message)s")
    # aiosqlite logs every statement with its parameters at DEBUG (key ids, emails, ...).
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    try:
        return args.func(args)
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """stdout's reader stopped early (``kraken export ... | head``): end quietly, as a Unix
    tool killed by SIGPIPE does (a shell reports 141), not with a traceback. stdout is
    pointed at /dev/null, so the interpreter's last flush of it cannot fail again."""
    import signal

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE
