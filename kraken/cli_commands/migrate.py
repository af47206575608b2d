"""``kraken migrate --from sqlite:PATH --to postgresql://...``: move one host's state to PostgreSQL.

Stop Kraken first (a running one keeps writing to the file after its snapshot is taken).
Exit 0: copied, verified and committed. Exit 2: refused before anything was written (target
not empty, source not a Kraken file or another schema version, bad arguments). Exit 1: the
copy or its verification failed and the target was rolled back to what it was.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

DATABASE_URL_ENV = "KRAKEN_DATABASE_URL"
"""kraken.config.store's name for it (not imported here: ``kraken --help`` stays fast)."""

EPILOG = f"""\
The target must be an empty database (or one a Kraken created and never used). Everything is
copied, then checked (row counts per table, every wallet balance, the audit hash chain), in one
transaction: a failure or mismatch leaves the target as it was. The source is opened read-only.
A --to URL holding a password is refused (exit 2): every user of the host can read argv in ps.
environment:
  {DATABASE_URL_ENV}  the target when --to is not given (it may hold the password)
  PGPASSWORD           the password for a --to URL without one (or ~/.pgpass)"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("migrate", help="copy a SQLite database into an empty PostgreSQL one",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH",
                   help="the Kraken SQLite file to copy (never modified)")
    p.add_argument("--to", dest="target", metavar="postgresql://...",
                   help=f"the empty PostgreSQL database, without a password (argv is visible "
                        f"in ps; default: ${DATABASE_URL_ENV}, which may hold one)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if not args.source.startswith("sqlite:") or len(args.source) == len("sqlite:"):
        return _refuse("--from must be sqlite:PATH")
    dsn = args.target or os.environ.get(DATABASE_URL_ENV, "")
    if not dsn.startswith(("postgresql://", "postgres://")):
        return _refuse(f"--to (or {DATABASE_URL_ENV}) must be a postgresql:// URL")
    if args.target and _has_password(args.target):
        return _refuse(f"--to: the URL holds a password, which every user of this host can read "
                       f"in ps while the copy runs; give the URL in ${DATABASE_URL_ENV} "
                       f"instead (or the password in $PGPASSWORD or ~/.pgpass)")
    from kraken.config.sections import StoreConfig
    from kraken.config.store import describe
    from kraken.store import migrate as mig
    from kraken.store.errors import StoreError

    where = describe(StoreConfig(backend="postgres", dsn=dsn))
    try:
        report = asyncio.run(mig.migrate(args.source[len("sqlite:"):], dsn, check=_audit_chain))
    except mig.MigrationRefused as exc:
        return _refuse(str(exc))
    except mig.VerificationFailed as exc:
        _summary(exc.report)
        print(f"kraken: migrate: {exc}; {where} was rolled back", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"kraken: migrate: {exc}; {where} was rolled back", file=sys.stderr)
        return 1
    _summary(report)
    print(f"migrated {args.source} -> {where}: committed")
    return 0


async def _audit_chain(tx: Any) -> tuple[bool, str]:
    """The target's audit chain verified by the same walk as ``kraken audit verify``."""
    from kraken import audit

    result = await audit.verify(tx)
    if result.ok:
        return True, f"audit chain: {result.checked} entries verified, head {result.head_hash}"
    return False, f"audit chain: entry {result.bad_seq}: {result.reason}"


def _summary(report: Any) -> None:
    print(f"{'table':<22}{'source':>10}{'target':>10}")
    for t in report.tables:
        print(f"{t.name:<22}{t.source:>10}{t.target:>10}{'' if t.ok else '  MISMATCH'}")
    print(f"wallets: {report.wallets_compared - report.wallets_differing} of "
          f"{report.wallets_compared} balances equal")
    for line in report.notes:
        print(line)


def _has_password(url: str) -> bool:
    """Whether ``url`` carries a password: ``user:password@`` or ``?password=``."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    return bool(parts.password) or "password" in parse_qs(parts.query)


def _refuse(message: str) -> int:
    print(f"kraken: migrate: {message}", file=sys.stderr)
    return 2
