"""``kraken byok set|delete|list|rotate|keygen``: argument handling over ``kraken.accounts.byok``.

The provider key is read from stdin (or a hidden prompt on a terminal), never from argv, which
other users can read in ``ps``. Nothing printed ever contains a provider key.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys

from kraken import clikit


def add_parser(sub: argparse._SubParsersAction) -> None:
    byok = sub.add_parser("byok", help="customers' own provider keys (BYOK)").add_subparsers(
        dest="byok_command", required=True)
    set_cmd = byok.add_parser("set", help="store a customer's provider key (read from stdin)")
    set_cmd.add_argument("customer_id", help="customer id (cus_...)")
    set_cmd.add_argument("provider", help="openai, anthropic, mistral, groq, deepseek, xai, gemini")
    delete = byok.add_parser("delete", help="delete a customer's provider key now")
    delete.add_argument("customer_id", help="customer id (cus_...)")
    delete.add_argument("provider", help="the provider kind whose key to delete")
    listing = byok.add_parser("list", help="stored keys (who, provider, master key version)")
    listing.add_argument("--customer", dest="customer_id", help="only this customer id")
    rotate = byok.add_parser("rotate", help="re-encrypt every key under the newest master key")
    for p in (set_cmd, delete, listing, rotate):
        clikit.add_config(p).set_defaults(func=main)
    keygen = byok.add_parser("keygen", help="print a new master key line 'version:base64key'")
    keygen.add_argument("--version", type=int, default=1, dest="key_version",
                        help="version number of the new key (default 1; one above the newest)")
    keygen.set_defaults(func=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    from kraken.accounts.masterkey import KeyringError, new_entry

    try:
        print(new_entry(args.key_version))
    except KeyringError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    return 0


def main(args: argparse.Namespace) -> int:
    from kraken.accounts import masterkey

    cfg = clikit.load_config(args.config)
    if cfg is None:
        return 2
    try:
        keyring = masterkey.load(cfg.byok.master_key_file, cfg.byok.master_key)
    except masterkey.KeyringError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2
    if keyring is None and args.byok_command in ("set", "rotate"):
        print("kraken: no BYOK master key: set byok.master_key_file or KRAKEN_BYOK_MASTER_KEY "
              "(kraken byok keygen makes one)", file=sys.stderr)
        return 2
    secret = None
    if args.byok_command == "set":
        secret = (getpass.getpass("Provider key: ") if sys.stdin.isatty()
                  else sys.stdin.readline().strip())
    return asyncio.run(_run(args, cfg, keyring, secret))


async def _run(args: argparse.Namespace, cfg, keyring, secret: str | None) -> int:
    from kraken.store.errors import StoreError

    try:
        async with clikit.open_store(cfg) as store:
            return await _command(args, store, keyring, secret)
    except StoreError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 1


async def _command(args: argparse.Namespace, store, keyring, secret: str | None) -> int:
    from kraken.accounts import byok
    from kraken.accounts.validation import AccountError

    try:
        if args.byok_command == "set":
            entry = await byok.set_key(store, keyring, args.customer_id, args.provider, secret)
            del secret
            await _audit(store, "byok.set", args.customer_id, provider=args.provider,
                         key_version=entry.key_version)
            _out(args, entry.as_dict(),
                 f"stored {entry.provider} key for {entry.customer_id} "
                 f"(master key version {entry.key_version})")
        elif args.byok_command == "delete":
            await byok.delete_key(store, args.customer_id, args.provider)
            await _audit(store, "byok.delete", args.customer_id, provider=args.provider)
            _out(args, {"deleted": True, "customer_id": args.customer_id, "provider": args.provider},
                 f"deleted {args.provider} key of {args.customer_id}")
        elif args.byok_command == "list":
            entries = await byok.list_keys(store, args.customer_id)
            if args.json:
                print(json.dumps([e.as_dict() for e in entries]))
            else:
                _table(entries)
        elif args.byok_command == "rotate":
            report = await byok.rotate(store, keyring)
            await _audit(store, "byok.rotate", "*", None, rotated=report.rotated,
                         newest=report.newest)
            _out(args, report.as_dict(),
                 f"re-encrypted {report.rotated + report.current} key(s) under master key version "
                 f"{report.newest}: {report.rotated} from older versions, {report.current} already "
                 f"current; before: " + (", ".join(f"v{v}={n}" for v, n in sorted(report.by_version.items()))
                                        or "none"))
    except AccountError as exc:
        print(f"kraken: {exc.message}", file=sys.stderr)
        return 1 if exc.status >= 500 else 2
    return 0


def _out(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps(data) if args.json else text)


def _table(entries) -> None:
    import time

    rows = [("CUSTOMER", "PROVIDER", "VERSION", "UPDATED (UTC)")]
    rows += [(e.customer_id, e.provider, str(e.key_version),
              time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.updated_at))) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


async def _audit(store, action: str, target: str, subject: str | None = "", **detail) -> None:
    """One audit entry per change: who (the OS user), what, which customer; never the key."""
    from kraken import audit

    await audit.record(store, actor=audit.cli_actor(), action=action, target=target,
                       subject=target if subject == "" else subject, detail=detail or None)
