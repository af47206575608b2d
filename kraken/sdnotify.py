"""systemd readiness notifications (``sd_notify``) for ``Type=notify`` units, without a library.

The protocol is one datagram of newline-separated ``KEY=value`` lines sent to the AF_UNIX
socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).
Outside systemd the variable is unset and every call is a cheap no-op returning False.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger("kraken.sdnotify")


def _address(env: Mapping[str, str]) -> str | None:
    raw = env.get("NOTIFY_SOCKET", "")
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # unset, or a transport Kraken doesn't speak (systemd's vsock:)


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); True when a notify socket took it."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(2.0)  # never hang the event loop on a stuck manager
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address.replace("\0", "@"), exc)
        return False
    return True


def _with_status(state: str, status: str | None) -> str:
    return state if status is None else f"{state}\nSTATUS={status.replace(chr(10), ' ')}"


def ready(status: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Startup finished (listeners open), or a reload finished."""
    return notify(_with_status("READY=1", status), env=env)


def reloading(status: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """A reload (SIGHUP) started; send ``ready()`` when it is done. ``MONOTONIC_USEC`` is
    what ``Type=notify-reload`` (systemd >= 253) needs to match the reload to its request."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(_with_status(f"RELOADING=1\nMONOTONIC_USEC={usec}", status), env=env)


def stopping(status: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Shutdown started (draining)."""
    return notify(_with_status("STOPPING=1", status), env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Free-form one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={text.replace(chr(10), ' ')}", env=env)
