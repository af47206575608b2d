"""What the ``kraken`` subcommands over the store share: the ``--config``/``--json`` options,
loading the config, opening the store, and printing JSON or a plain table.

Kept free of heavy imports so ``kraken --help`` stays fast; the store and config are imported
when a command runs.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

CONFIG_HELP = "TOML file (default: $KRAKEN_CONFIG or ./kraken.toml)"


def add_config(p: argparse.ArgumentParser, *, json_flag: bool = True) -> argparse.ArgumentParser:
    """Give ``p`` the ``--config`` option (and ``--json`` unless ``json_flag`` is false)."""
    p.add_argument("--config", help=CONFIG_HELP)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def load_config(path: str | None) -> Any:
    """The config, or None after printing why it could not be loaded (the caller exits 2)."""
    from kraken import config

    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return None


@contextlib.asynccontextmanager
async def open_store(cfg: Any) -> AsyncIterator[Any]:
    """The configured store (SQLite or PostgreSQL), closed on the way out. A SQLite file that
    cannot be opened is a ``StoreError`` naming it, which each command prints as one line."""
    from kraken.store.open import opened_store

    if cfg.store.backend == "sqlite":
        _openable(cfg.store.path, cfg.source)
    async with opened_store(cfg.store, pool_size=2) as store:
        yield store


def _openable(path: str, source: str) -> None:
    """Try the SQLite file synchronously first (as ``kraken serve`` does): aiosqlite's own
    failed connect escapes unmapped, as a traceback."""
    import sqlite3

    from kraken.store.errors import StoreError

    try:
        sqlite3.connect(path).close()
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{source}: store.path: cannot open {path!r}: {exc}") from None


def run_with_store(command: Callable[[argparse.Namespace, Any, Any], Awaitable[int]]
                   ) -> Callable[[argparse.Namespace], int]:
    """An argparse ``func`` that loads the config, opens the store and awaits
    ``command(args, cfg, store)``. Exit 2 on a bad config or a ``KrakenError`` (printed as its
    ``field: message``), 3 on a store error."""
    def run(args: argparse.Namespace) -> int:
        from kraken.errors import KrakenError
        from kraken.store.errors import StoreError

        cfg = load_config(args.config)
        if cfg is None:
            return 2

        async def main() -> int:
            async with open_store(cfg) as store:
                return await command(args, cfg, store)

        try:
            return asyncio.run(main())
        except KrakenError as exc:
            print(f"kraken: {exc.message}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"kraken: store: {exc}", file=sys.stderr)
            return 3
    return run


def dump(value: Any) -> None:
    """``value`` as indented JSON on stdout."""
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_rows(args: argparse.Namespace, rows: list[dict], columns: Sequence[str],
               rename: dict[str, str] | None = None) -> None:
    """``rows`` as JSON with ``--json``, else as a table of ``columns``."""
    if args.json:
        dump(rows)
        return
    print(table(rows, columns, rename))


def table(rows: list[dict], columns: Sequence[str], rename: dict[str, str] | None = None) -> str:
    """A plain-text table; control characters are escaped so a stored value cannot move the
    terminal's cursor."""
    import orjson

    rename = rename or {}

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.6g}"
        if isinstance(value, (dict, list)):
            value = orjson.dumps(value).decode()
        return str(value).encode("unicode_escape").decode("ascii") \
            if any(ord(c) < 32 or ord(c) == 127 for c in str(value)) else str(value)

    head = [rename.get(c, c) for c in columns]
    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    if not rows:
        lines.append("(no rows)")
    return "\n".join(lines)
