"""Grow the process's file-descriptor table once, at start, instead of during the first burst.

Linux keeps a process's open files in a table that starts with 64 slots and doubles when a
new descriptor does not fit. In a process with more than one thread (Kraken has the store's
threads), each doubling waits for an RCU grace period (``expand_fdtable`` calls
``synchronize_rcu``): 7-23 ms on this kind of VM, during which the event loop stands still.
The first burst of 1000 streams (1000 client sockets and 1000 provider sockets) crossed
256, 512, 1024 and 2048 descriptors, and stalled the loop four times; later bursts found the
table grown. nginx's single-threaded worker never waits for it.

``reserve_descriptors`` grows the table at start, while Kraken has one thread (no grace
period to wait for), to the soft ``RLIMIT_NOFILE`` (the unit sets ``LimitNOFILE``) or
``MAX_RESERVED``, whichever is lower. A slot costs the kernel 8 bytes (64 KiB per 8192
slots), not the process's RSS. The table never shrinks, so no later descriptor below that
number waits.
"""
from __future__ import annotations

import fcntl
import os
import resource

MAX_RESERVED = 65_536
"""At most this many slots (512 KiB of kernel memory), even under a larger limit (a
container's default of 1,048,576 would cost 8 MiB)."""


def reserve_descriptors(limit: int | None = None) -> int:
    """Grow the descriptor table to ``limit`` slots (default: the soft ``RLIMIT_NOFILE``,
    capped at ``MAX_RESERVED``); returns the slots asked for (0: nothing done).

    It duplicates a descriptor onto the lowest free number at or above ``limit - 1``
    (``F_DUPFD``: no open descriptor is replaced), which makes the kernel size the table to
    cover it, then closes both."""
    if limit is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = MAX_RESERVED if soft == resource.RLIM_INFINITY else min(soft, MAX_RESERVED)
    if limit < 2:
        return 0
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, limit - 1)
    except OSError:  # every slot from limit - 1 up is taken (EMFILE), or limit is past the cap
        return 0
    finally:
        os.close(fd)
    os.close(high)
    return limit
