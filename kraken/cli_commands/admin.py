"""``kraken admin-token | usage | export | erase | audit verify|list``: the admin API's
functions over the SQLite store named by the config, no HTTP needed.

Output is a readable table by default and JSON with ``--json``. Every input is validated
with the admin API's validators, so errors name the option the same way; changes are
audited with actor ``cli:<os user>``.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from kraken import clikit


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register the admin subcommands on ``kraken``'s subparsers."""
    with_config, _run = clikit.add_config, clikit.run_with_store
    tok = sub.add_parser("admin-token", help="make an admin API token and its [admin] token_hash")
    tok.add_argument("--hash", action="store_true",
                     help="read an existing token from stdin (a hidden prompt on a terminal) "
                          "and print only its hash")
    tok.set_defaults(func=_admin_token)

    use = with_config(sub.add_parser("usage", help="requests, tokens, cost, latency, errors"))
    use.add_argument("--customer", help="only this customer id")
    use.add_argument("--key", help="only this key id")
    use.add_argument("--model", help="only this model (as requested)")
    use.add_argument("--group-by", default="day", help="day, model, customer, provider or key")
    use.add_argument("--from", dest="start", help="unix seconds or ISO date (inclusive)")
    use.add_argument("--to", dest="end", help="unix seconds or ISO date (exclusive)")
    use.set_defaults(func=_run(_usage))

    exp = with_config(sub.add_parser("export", help="a customer's data (GDPR access/portability)"),
                      json_flag=False)
    exp.add_argument("customer", help="customer id (cus_...)")
    exp.add_argument("--format", default="jsonl", help="jsonl or csv")
    exp.add_argument("--output", "-o", help="file to write (default: stdout)")
    exp.set_defaults(func=_run(_export))

    era = with_config(sub.add_parser("erase", help="erase a customer and its data (GDPR)"))
    era.add_argument("customer", help="customer id (cus_...)")
    era.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    era.set_defaults(func=_run(_erase))

    aud = sub.add_parser("audit", help="the admin audit log").add_subparsers(
        dest="audit_command", required=True)
    ver = with_config(aud.add_parser("verify", help="check the hash chain; exit 1 if tampered"))
    ver.set_defaults(func=_run(_audit_verify))
    lst = with_config(aud.add_parser("list", help="entries, oldest first"))
    lst.add_argument("--after", type=int, default=0,
                     help="start after this entry number (default 0: from the first)")
    lst.add_argument("--limit", type=int, default=100,
                     help="entries to show, 1-10000 (default 100)")
    lst.set_defaults(func=_run(_audit_list))


def _admin_token(args: argparse.Namespace) -> int:
    from kraken.admin.token import generate_token, hash_token

    if args.hash:  # on a terminal, not echoed (nor left in its scrollback)
        token = (getpass.getpass("Admin token: ") if sys.stdin.isatty()
                 else sys.stdin.readline()).strip()
        if not token:
            print("kraken: token: empty (give it on stdin)", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    token = generate_token()
    print(f"# admin token (shown once; send as 'Authorization: Bearer <token>'): {token}")
    print("[admin]")
    print(f'token_hash = "{hash_token(token)}"')
    return 0


async def _usage(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from kraken.admin import validate as val
    from kraken.admin.usage import COLUMNS, GROUPS, UsageQuery, usage

    q = UsageQuery(
        customer=val.ident(args.customer, "--customer", required=False),
        key=val.ident(args.key, "--key", required=False),
        model=(val.clean_text(args.model, "--model", max_len=val.QUERY_VALUE_MAX)
               if args.model else None),
        group_by=val.choice(args.group_by, "--group-by", tuple(GROUPS), "day"),
        start=val.timestamp(args.start, "--from"), end=val.timestamp(args.end, "--to"))
    rows = await usage(store, q)
    clikit.print_rows(args, rows, COLUMNS, {"group": args.group_by})
    return 0


async def _export(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from kraken import audit
    from kraken.accounts import service
    from kraken.admin import validate as val
    from kraken.privacy.export import FORMATS, export_stream

    fmt = val.choice(args.format, "--format", FORMATS, "jsonl")
    customer = (await service.get_customer(store, val.ident(args.customer, "customer"))).as_dict()
    try:  # before the audit entry: an export that cannot be written did not happen
        out = open(args.output, "wb") if args.output else sys.stdout.buffer
    except OSError as exc:
        raise val.invalid("--output", f"cannot write {args.output!r}: {exc.strerror}") from None
    try:
        await audit.record(store, actor=audit.cli_actor(), action="customer.export",
                           target=customer["id"], subject=customer["id"], detail={"format": fmt})
        async for chunk in export_stream(store, customer, fmt,
                                         page_rows=cfg.admin.export_page_rows):
            out.write(chunk)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


async def _erase(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from kraken import audit
    from kraken.accounts import service
    from kraken.admin import validate as val
    from kraken.privacy.erase import erase_customer

    cid = val.ident(args.customer, "customer")
    await service.get_customer(store, cid)  # 'no such customer' before asking
    if not args.yes:
        if not sys.stdin.isatty():
            print("kraken: --yes: required to erase without a terminal", file=sys.stderr)
            return 2
        try:
            answer = input(f"Erase customer {cid} and all its data? This cannot be undone. "
                           "[y/N] ")
        except EOFError:  # Ctrl-D: no answer is a no, said on a line of its own
            print(file=sys.stderr)
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not erased", file=sys.stderr)
            return 1
    result = await erase_customer(store, cid, actor=audit.cli_actor(),
                                  keep_billing_records=cfg.retention.keep_billing_records)
    report = result.to_dict()
    if args.json:
        clikit.dump(report)
    else:
        tables = ", ".join(f"{t}={n}" for t, n in sorted(report["rows_deleted"].items()))
        print(f"erased {cid}: rows deleted {tables}; request records deleted "
              f"{report['requests_deleted']}, tombstoned {report['requests_tombstoned']}; "
              f"audit entries redacted {report['audit_entries_redacted']}; "
              f"{_files_after_erasure(report['wal_truncated'], store.privacy.leftovers)}")
    return 0


def _files_after_erasure(wal_truncated: bool | None, leftovers: str) -> str:
    """What the backend's files still hold, as true for it: SQLite's WAL step can be blocked
    by a reader; PostgreSQL has no such step (``wal_truncated`` None) and keeps bytes a while."""
    if wal_truncated is None:
        return f"files: {leftovers}"
    if wal_truncated:
        return f"WAL truncated: yes ({leftovers})"
    return ("WAL truncated: no (a reader held it: the erased rows' old pages stay in the -wal "
            "file until a later checkpoint overwrites or truncates it; PRAGMA "
            "wal_checkpoint(TRUNCATE) once no reader holds it)")


async def _audit_verify(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from kraken import audit

    result = await audit.verify(store)
    if args.json:
        clikit.dump(result.to_dict())
    elif result.ok:
        print(f"audit log OK: {result.checked} entries, head {result.head_hash}")
    else:
        print(f"audit log TAMPERED at entry {result.bad_seq}: {result.reason} "
              f"({result.checked} entries before it verified)")
    return 0 if result.ok else 1


async def _audit_list(args: argparse.Namespace, cfg: Any, store: Any) -> int:
    from kraken import audit
    from kraken.admin.errors import invalid

    if args.after < 0:
        raise invalid("--after", "must be a non-negative integer")
    if not 1 <= args.limit <= 10_000:
        raise invalid("--limit", "must be between 1 and 10000")
    entries = [e.to_dict() for e in await audit.list_entries(store, after_seq=args.after,
                                                              limit=args.limit)]
    for e in entries:
        e["ts"] = _iso(e["ts"]) if not args.json else e["ts"]
    clikit.print_rows(args, entries,
                      ("seq", "ts", "actor", "action", "target", "subject", "detail"))
    return 0


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

