"""What a stop or reload signal means at each point of a process's life: the one table both the
single-process server (``kraken/app.py``) and the workers' supervisor (``kraken/workers.py``)
follow. No I/O but its log lines: the caller acts on the answer (drains, cuts, reloads).

    SERVING ──stop──▶ DRAINING ──stop again──▶ CUT_SHORT
    SERVING | DRAINING ──cut──▶ CUT_SHORT

``stop`` is SIGTERM or SIGINT. A second one during the drain ends it at once, as uvicorn's second
Ctrl-C and nginx's fast shutdown do: open connections are cut, and every admitted request is
still recorded. Not in a supervised worker (``repeat_cuts`` false): systemd's default
KillMode=control-group sends SIGTERM to every process of the unit, so a worker gets one from
systemd and one from its supervisor; its drain is cut only by the supervisor's ``cut``
(``CUT_SIGNAL``), sent when the supervisor itself gets a second stop signal.

SIGHUP reloads while SERVING only. Once stopping it is ignored (logged once): a reload's
READY=1 after STOPPING=1 would tell systemd the service is up again.
"""
from __future__ import annotations

import logging
import signal
from typing import Callable

log = logging.getLogger("kraken.shutdown")

SERVING, DRAINING, CUT_SHORT = "serving", "draining", "cut_short"
CUT_SIGNAL = signal.SIGQUIT
"""What the supervisor sends a worker to cut its drain short (gunicorn's arbiter sends its
workers SIGQUIT for a quick shutdown too); only a worker that reported READY=1 has a handler."""

_NEXT: dict[tuple[str, str], str] = {
    (SERVING, "stop"): DRAINING,
    (DRAINING, "stop"): CUT_SHORT,  # only where ``repeat_cuts``; a worker stays DRAINING
    (SERVING, "cut"): CUT_SHORT,  # the supervisor's cut may overtake its SIGTERM (lower number)
    (DRAINING, "cut"): CUT_SHORT,
}
"""The legal transitions; any other (state, event) leaves the state as it is."""


class Shutdown:
    """One process's place in its shutdown, moved by the signals it receives."""

    __slots__ = ("state", "repeat_cuts", "on_cut", "_repeat_logged", "_reload_logged")

    def __init__(self, *, repeat_cuts: bool = True) -> None:
        self.state = SERVING
        self.repeat_cuts = repeat_cuts
        """Whether a repeated stop signal cuts the drain (not in a supervised worker)."""
        self.on_cut: Callable[[], None] | None = None
        """Set by the drain while it waits: ends that wait when the drain is cut short."""
        self._repeat_logged = False
        self._reload_logged = False

    @property
    def stopping(self) -> bool:
        return self.state is not SERVING

    def stop(self, name: str) -> bool:
        """SIGTERM/SIGINT (``name``); True when it begins the drain: the caller stops serving."""
        if self.state is DRAINING and not self.repeat_cuts:
            if not self._repeat_logged:
                self._repeat_logged = True
                log.info("%s again: still draining (a worker's drain is cut short by its "
                         "supervisor only)", name)
            return False
        return self._move("stop", f"a second {name}")

    def cut(self, why: str) -> bool:
        """End the drain now (the supervisor's ``CUT_SIGNAL``); True when this also begins it."""
        return self._move("cut", why)

    def reload(self) -> bool:
        """SIGHUP: True when the caller should reload; once stopping it is ignored, logged once."""
        if self.state is SERVING:
            return True
        if not self._reload_logged:
            self._reload_logged = True
            log.warning("SIGHUP ignored: shutting down (no reload, no READY=1 after STOPPING=1)")
        return False

    def _move(self, event: str, why: str) -> bool:
        before = self.state
        after = _NEXT.get((before, event), before)
        self.state = after
        if after is CUT_SHORT and before is not CUT_SHORT:
            log.warning("%s: drain cut short; open connections are closed, every admitted "
                        "request is still recorded", why)
            on_cut = self.on_cut
            if on_cut is not None:
                on_cut()
        return before is SERVING
