"""``kraken customers create|list|show|update`` and ``kraken keys create|list|revoke|delete``:
the accounts service over the SQLite store named by the config. Argument parsing and
printing only; every change is audited with actor ``cli:<os user>``.

Readable tables by default, JSON with ``--json``. Errors print as ``field: message`` and exit
2. A new key's secret is printed once, on stdout only. (Erasing a customer, with its request
metadata and BYOK keys, is ``kraken erase``.)
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from kraken import clikit

_CUSTOMER_COLUMNS = ("id", "email", "name", "plan", "opted_out", "created_at")
_KEY_COLUMNS = ("id", "customer_id", "name", "status", "expires_at", "allowed_models", "rpm",
                "tpm", "max_concurrent", "token_budget", "spend_budget_usd")


def add_parsers(sub: argparse._SubParsersAction, keys: argparse._SubParsersAction) -> None:
    """Register ``customers`` on ``kraken``'s subparsers and the database key commands on
    the existing ``keys`` subparsers (beside ``hash`` and ``new``)."""
    common, _run = clikit.add_config, clikit.run_with_store
    cus = sub.add_parser("customers", help="customer accounts").add_subparsers(
        dest="customers_command", required=True)
    c = common(cus.add_parser("create", help="add a customer"))
    c.add_argument("--email", required=True, help="the customer's email address")
    c.add_argument("--name", help="display name (optional)")
    c.add_argument("--plan", default="default",
                   help="a [plans] name (default: [plans] default)")
    c.set_defaults(func=_run(_customers_create))
    c = common(cus.add_parser("list", help="list customers"))
    c.add_argument("--limit", type=int, default=100, help="rows per page (default 100)")
    c.add_argument("--after", help="last id of the previous page (a full page names it on "
                                   "stderr when more follow)")
    c.set_defaults(func=_run(_customers_list))
    c = common(cus.add_parser("show", help="one customer"))
    c.add_argument("customer", help="customer id (cus_...)")
    c.set_defaults(func=_run(_customers_show))
    c = common(cus.add_parser("update", help="rectify email or name; change plan or opt-out"))
    c.add_argument("customer", help="customer id (cus_...)")
    c.add_argument("--email", help="new email address")
    c.add_argument("--name", help="new name ('' clears it)")
    c.add_argument("--plan", help="new [plans] name")
    c.add_argument("--opt-out", dest="opted_out", action="store_const", const=True,
                   help="object to routing-statistics use of this customer's metadata")
    c.add_argument("--opt-in", dest="opted_out", action="store_const", const=False,
                   help="withdraw the objection (--opt-out)")
    c.set_defaults(func=_run(_customers_update))

    k = common(keys.add_parser("create", help="issue a database key (secret shown once)"))
    k.add_argument("--customer", required=True, help="customer id the key belongs to")
    k.add_argument("--name", help="a label for the key (optional)")
    k.add_argument("--org", help="organisation id the key belongs to (optional)")
    k.add_argument("--expires", help="Unix seconds or ISO date/time (UTC), in the future")
    k.add_argument("--models", help="comma-separated allow-list of model names (default: all)")
    k.add_argument("--rpm", type=int, default=0,
                   help="requests per minute (0: plan/[limits] default)")
    k.add_argument("--tpm", type=int, default=0,
                   help="tokens per minute (0: plan/[limits] default)")
    k.add_argument("--max-concurrent", type=int, default=0,
                   help="requests in flight (0: plan/[limits] default)")
    k.add_argument("--token-budget", type=int, help="lifetime tokens, then 429 (default: none)")
    k.add_argument("--spend-budget-usd", type=float,
                   help="lifetime spend in USD (cost + fee), then 402 (default: none)")
    k.add_argument("--env", choices=("live", "test"), default="live",
                   help="kr_live_ or kr_test_ prefix (default %(default)s)")
    k.add_argument("--rounds", type=int, default=12, help="bcrypt cost (default 12)")
    k.set_defaults(func=_run(_keys_create))
    k = common(keys.add_parser("list", help="list database keys (never secrets or hashes)"))
    k.add_argument("--customer", help="only this customer's keys")
    k.add_argument("--org", help="only this organisation's keys")
    k.add_argument("--active", action="store_true", help="leave out revoked keys")
    k.set_defaults(func=_run(_keys_list))
    k = common(keys.add_parser("revoke", help="revoke a key (refused everywhere within 1 s)"))
    k.add_argument("key_id", help="the key's public id")
    k.set_defaults(func=_run(_keys_revoke))
    k = common(keys.add_parser("delete", help="delete a key"))
    k.add_argument("key_id", help="the key's public id")
    k.set_defaults(func=_run(_keys_delete))


async def _audit(store, action: str, target: str, subject: str, **detail: Any) -> None:
    from kraken import audit

    await audit.record(store, actor=audit.cli_actor(), action=action, target=target,
                       subject=subject, detail=detail or None)


async def _customers_create(args, cfg, store) -> int:
    from kraken.accounts import service

    cus = await service.create_customer(store, args.email, args.name, plan=args.plan)
    await _audit(store, "customer.create", cus.id, cus.id,
                 fields=sorted(f for f in ("email", "name", "plan") if getattr(args, f)))
    _print(args, [cus.as_dict()], _CUSTOMER_COLUMNS)
    return 0


async def _customers_list(args, cfg, store) -> int:
    """One page; when more follow, the command for the next page on stderr (stdout stays
    the table or the JSON a script reads)."""
    from kraken.accounts import service

    rows = await service.list_customers(store, limit=args.limit, after=args.after)
    _print(args, [c.as_dict() for c in rows], _CUSTOMER_COLUMNS)
    if len(rows) == args.limit and await service.list_customers(store, limit=1,
                                                                after=rows[-1].id):
        print(f"kraken: more customers follow: kraken customers list --limit {args.limit} "
              f"--after {rows[-1].id}", file=sys.stderr)
    return 0


async def _customers_show(args, cfg, store) -> int:
    from kraken.accounts import service

    cus = await service.get_customer(store, args.customer)
    _print(args, [cus.as_dict()], _CUSTOMER_COLUMNS)
    return 0


async def _customers_update(args, cfg, store) -> int:
    from kraken.accounts import service

    changes = {f: getattr(args, f) for f in ("email", "name", "plan", "opted_out")
               if getattr(args, f) is not None}
    if not changes:
        raise service.ValidationError(None, "give at least one of --email, --name, --plan, "
                                            "--opt-out, --opt-in")
    cus = await service.update_customer(store, args.customer, **changes)
    await _audit(store, "customer.update", cus.id, cus.id, fields=sorted(changes))
    _print(args, [cus.as_dict()], _CUSTOMER_COLUMNS)
    return 0


def _when(value: str | None) -> float | None:
    from kraken.accounts.validation import ValidationError

    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("expires", "must be Unix seconds or an ISO date/time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


async def _keys_create(args, cfg, store) -> int:
    from kraken.accounts import service

    models = None if args.models is None else [m for m in args.models.split(",")]
    created = await service.create_key(
        store, args.customer, name=args.name, org_id=args.org, expires_at=_when(args.expires),
        allowed_models=models, rpm=args.rpm, tpm=args.tpm, max_concurrent=args.max_concurrent,
        token_budget=args.token_budget, spend_budget_usd=args.spend_budget_usd, env=args.env,
        rounds=args.rounds)
    key = created.key
    await _audit(store, "key.create", key.id, key.customer_id)
    if args.json:
        clikit.dump({"key": key.as_dict(), "secret": created.plaintext})
    else:
        _print(args, [key.as_dict()], _KEY_COLUMNS)
        print(f"\nsecret (shown once, store it now): {created.plaintext}")
    return 0


async def _keys_list(args, cfg, store) -> int:
    from kraken.accounts import service

    keys = await service.list_keys(store, customer_id=args.customer, org_id=args.org,
                                   include_revoked=not args.active)
    _print(args, [k.as_dict() for k in keys], _KEY_COLUMNS)
    return 0


async def _keys_revoke(args, cfg, store) -> int:
    from kraken.accounts import service

    key = await service.revoke_key(store, args.key_id, redis_url=cfg.limits.redis_url or None)
    await _audit(store, "key.revoke", key.id, key.customer_id)
    _print(args, [key.as_dict()], _KEY_COLUMNS)
    return 0


async def _keys_delete(args, cfg, store) -> int:
    from kraken.accounts import service

    key = await service.get_key(store, args.key_id)
    await service.delete_key(store, key.id, redis_url=cfg.limits.redis_url or None)
    await _audit(store, "key.delete", key.id, key.customer_id)
    if args.json:
        clikit.dump({"id": key.id, "deleted": True})
    else:
        print(f"deleted {key.id}")
    return 0


def _print(args: argparse.Namespace, rows: list[dict], columns: tuple[str, ...]) -> None:
    if not args.json:
        for row in rows:
            for col in ("created_at", "expires_at", "revoked_at"):
                if isinstance(row.get(col), float):
                    row[col] = dt.datetime.fromtimestamp(row[col], dt.timezone.utc).strftime(
                        "%Y-%m-%d %H:%M:%S")
    clikit.print_rows(args, rows, columns)
