"""``kraken wallet topup|balance|transactions``: the operator's view of the wallet ledger.

Works on the configured SQLite file directly (WAL: safe beside a running Kraken, which picks
the change up within ``[wallet] refresh_interval_s``). Output is JSON, one object per line.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

import orjson

from kraken import clikit

MOST_TRANSACTIONS = 1000
"""The most rows ``transactions --limit`` shows (``wallet.transactions``' own bound, the admin
API's ``?limit=``): a value outside 1..this is refused, not quietly changed."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    wallet = sub.add_parser("wallet", help="prepaid wallet ledger").add_subparsers(
        dest="wallet_command", required=True)
    top = wallet.add_parser("topup", help="credit a customer's wallet (idempotent by --ref)")
    top.add_argument("customer_id", help="customer id (cus_...)")
    top.add_argument("amount_usd", help="e.g. 25 or 12.50 (at most 6 decimals)")
    top.add_argument("--ref", help="idempotency key: the same ref never credits twice "
                                   "(default: a new random one)")
    top.add_argument("--kind", choices=("top_up", "refund", "adjustment"), default="top_up",
                     help="refund/adjustment may be negative (never below a zero balance)")
    bal = wallet.add_parser("balance", help="print a customer's balance")
    bal.add_argument("customer_id", help="customer id (cus_...)")
    txs = wallet.add_parser("transactions", help="a customer's transactions, newest first")
    txs.add_argument("customer_id", help="customer id (cus_...)")
    txs.add_argument("--limit", type=int, default=50,
                     help=f"rows to show, 1-{MOST_TRANSACTIONS} (default 50)")
    for p in (top, bal, txs):
        clikit.add_config(p, json_flag=False).set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.wallet_command == "transactions" and not 1 <= args.limit <= MOST_TRANSACTIONS:
        print(f"kraken: --limit: must be between 1 and {MOST_TRANSACTIONS}", file=sys.stderr)
        return 2
    cfg = clikit.load_config(args.config)
    if cfg is None:
        return 2
    return asyncio.run(_run(args, cfg))


async def _run(args: argparse.Namespace, cfg) -> int:
    from kraken.store.errors import StoreError

    try:
        async with clikit.open_store(cfg) as store:
            return await _command(args, store)
    except StoreError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 1


async def _command(args: argparse.Namespace, store) -> int:
    from kraken.billing import wallet

    try:
        if args.wallet_command == "topup":
            micros = wallet.usd_to_micros(args.amount_usd)
            ref = args.ref or "cli:" + os.urandom(12).hex()
            txn, created = await wallet.apply(store, args.customer_id, args.kind, micros, ref)
            if created:
                from kraken import audit

                await audit.record(store, actor=audit.cli_actor(), action=f"wallet.{args.kind}",
                                   target=args.customer_id, subject=args.customer_id,
                                   detail={"amount_micros": micros})
            _print({**txn.to_dict(), "duplicate": not created})
        elif args.wallet_command == "balance":
            micros = await wallet.balance(store, args.customer_id)
            _print({"customer_id": args.customer_id, "balance_micros": micros,
                    "balance_usd": wallet.micros_to_usd(micros)})
        else:
            for txn in await wallet.transactions(store, args.customer_id, limit=args.limit):
                _print(txn.to_dict())
        return 0
    except wallet.WalletError as exc:
        print(f"kraken: {exc}", file=sys.stderr)
        return 2


def _print(obj: dict) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
