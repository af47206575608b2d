"""Kraken's files are its user's alone: the SQLite database (customers' emails, key hashes,
sealed BYOK keys, request metadata), its -wal/-shm, the crash journal and ``kraken export``
files. The README's ``kraken serve --demo`` runs under a login shell's umask 022, which would
make every one of them world-readable (0644)."""
from __future__ import annotations

import os

PRIVATE_UMASK = 0o077


def restrict_umask() -> None:
    """Add group and others to the process umask, once at start (inherited by workers).

    One place instead of a mode at each ``open``: it also covers files that libraries create
    themselves (SQLite's -wal/-shm), applies at creation (no window before a chmod), and keeps
    a stricter umask the operator set.
    """
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)

