"""A real full disk for failure tests: a tiny tmpfs mounted for one test (tests run as root),
filled with a filler file until the kernel answers ENOSPC, and freed again by deleting it."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield path
    finally:
        # Lazy: a process of the test that still holds a file open cannot keep it mounted.
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a filler file in ``directory`` until the filesystem is full; returns its path."""
    filler = directory / "filler.bin"
    block = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):  # whole blocks, then the last pages' tails
            while True:
                try:
                    if os.write(fd, block[:size]) < size:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def free(filler: Path) -> None:
    """Make room again (the operator deleting what filled the disk)."""
    filler.unlink()
