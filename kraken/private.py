"""Kraken's files are its user's alone: the SQLite database (customers' emails, key hashes,
sealed BYOK keys, request metadata), its -wal/-shm, the crash journal and ``kraken export``
files. The README's ``kraken serve --demo`` runs under a login shell's umask 022, which would
make every one of them world-readable (0644)."""
from __future__ import annotations

import logging
import os
import stat

PRIVATE_UMASK = 0o077

log = logging.getLogger("kraken.private")


def restrict_umask() -> None:
    """Add group and others to the process umask, once at start (inherited by workers).

    One place instead of a mode at each ``open``: it also covers files that libraries create
    themselves (SQLite's -wal/-shm), applies at creation (no window before a chmod), and keeps
    a stricter umask the operator set.
    """
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def warn_if_exposed(path: str) -> None:
    """Warn when an existing file (made by an older Kraken, or copied in) is open to others:
    a umask cannot tighten a file that already exists, and Kraken does not chmod the
    operator's files behind their back."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return
    if mode & stat.S_IRWXO:
        log.warning("%s is accessible by other users (mode %04o): it holds customers' data; "
                    "chmod 600 it and its -wal/-shm", path, mode)
