"""Worker processes: ``[server] workers = N`` runs N copies of the normal serve path on one
port (SO_REUSEPORT, the kernel spreads connections), under a supervisor.

The supervisor never opens the store and is the only process that talks to systemd. Each
child is ``python -m kraken serve ... --worker-index i --worker-count N``. It journals into
its own directory, ``<journal_dir>/worker-<i>``, stable across restarts of slot ``i``:
recovery replays and then deletes every segment of a directory, so two live processes
must never share one. A child's READY/RELOADING/STOPPING go out through the ordinary
sd_notify code to a socket the supervisor owns (``$NOTIFY_SOCKET`` in the child's
environment); the kernel stamps each datagram with the sender's pid (SO_PASSCRED).

The supervisor restarts a child that exits unexpectedly (exponential backoff; a slot
that keeps failing fails the whole service so systemd sees it), forwards SIGHUP to ready
children and reports READY=1 again once each of them has reloaded, and on SIGTERM/SIGINT
lets every child drain and flush, killing only those still alive past the drain deadline. A
second SIGTERM/SIGINT cuts every child's drain short (``shutdown.CUT_SIGNAL``); a SIGHUP once
stopping is ignored, and a reload still in progress then is abandoned: READY=1 never follows
STOPPING=1 (kraken/shutdown.py).
"""
from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kraken import sdnotify
from kraken.config import Config
from kraken.shutdown import CUT_SHORT, CUT_SIGNAL, Shutdown

log = logging.getLogger("kraken.workers")

SUPERVISOR_PID_ENV = "KRAKEN_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1
_UCRED = struct.Struct("3i")  # pid, uid, gid (SCM_CREDENTIALS)
EXIT_RECORDS_IN_JOURNAL = os.EX_TEMPFAIL
"""A worker's exit status when the store did not take every record by the drain deadline
(kraken.app's, 75): the supervisor exits with it too, so the service's status says so."""


def journal_dirs(cfg: Config, worker: int | None) -> tuple[Path, list[Path]]:
    """This process's crash-journal directory, and directories no live process writes to
    that it replays too: those left behind by a different ``workers`` setting.

    One process: ``<journal_dir>`` itself, plus every ``worker-*`` below it. Worker ``i``:
    ``<journal_dir>/worker-<i>``; worker 0 also takes ``<journal_dir>`` and the slots at
    or above ``cfg.server.workers`` (which must be the supervisor's count, not a re-read
    file's, or a restarting worker 0 could delete a live sibling's segments).
    """
    base = Path(cfg.journal_dir)
    slots = [p for p in base.glob("worker-*") if p.is_dir()] if base.is_dir() else []
    if worker is None:
        return base, sorted(slots)
    own = base / f"worker-{worker}"
    if worker != 0:
        return own, []
    stale = [p for p in slots if not p.name[7:].isdigit() or int(p.name[7:]) >= cfg.server.workers]
    return own, [base, *sorted(stale)]


def follow_supervisor() -> None:
    """In a worker: receive SIGTERM (a graceful drain) when the supervisor dies, even by
    SIGKILL, instead of serving on as an orphan nobody will restart or stop."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError):  # not Linux/glibc: the supervisor's cgroup still holds us
        pass
    expected = os.environ.get(SUPERVISOR_PID_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        raise SystemExit("kraken: worker supervisor is gone")  # died before prctl took


# A slot's legal transitions (its child process, or the wait before the next one):
#   new      -> starting | stopped               backoff  -> starting | stopped
#   starting -> ready | backoff | stopping       stopping -> stopped
#   ready    -> backoff | stopping
_TRANSITIONS = {
    "new": {"starting", "stopped"},
    "starting": {"ready", "backoff", "stopping"},
    "ready": {"backoff", "stopping"},
    "backoff": {"starting", "stopped"},
    "stopping": {"stopped"},
    "stopped": set(),
}


@dataclass(slots=True)
class Slot:
    """One worker position: index ``i`` keeps its journal directory across restarts."""

    index: int
    state: str = "new"
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0
    """Consecutive exits that came too soon after start (reset by a long enough run)."""
    restart_at: float = 0.0
    reported: bool = False
    """The current child sent READY=1 (so its signal handlers are installed)."""
    clean: bool = True
    """Its last child exited as asked (0, or SIGTERM before it had installed its handler)."""
    code: int = 0
    """Its last child's exit status as Popen reports it (negative: killed by that signal)."""

    def move(self, state: str) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise RuntimeError(f"worker {self.index}: {self.state} -> {state}")
        self.state = state


class Supervisor:
    """Start ``count`` workers, keep them running, report to systemd, stop them together."""

    def __init__(
        self,
        count: int,
        command: Callable[[int], list[str]],
        *,
        drain_timeout_s: float,
        stop_margin_s: float = 10.0,
        start_timeout_s: float = 60.0,
        reload_timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_s: float = 10.0,
        max_failures: int = 8,
    ) -> None:
        self.slots = [Slot(i) for i in range(count)]
        self._command = command
        self._stop_deadline_s = drain_timeout_s + stop_margin_s
        self._start_timeout_s = start_timeout_s
        self._reload_timeout_s = reload_timeout_s
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._stable_s = stable_s
        self._max_failures = max_failures
        self._shutdown = Shutdown()
        self._reload_requested = False
        self._reloading: set[int] = set()  # pids that have not reported READY since SIGHUP
        self._reload_deadline = 0.0
        self._failed = False
        self._env: dict[str, str] = {}
        self._selector = selectors.DefaultSelector()

    # -- the three phases ------------------------------------------------------------

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; 0 if every worker then exited cleanly (75: see
        ``_exit_status``)."""
        wake_r, wake_w = socket.socketpair()
        old = self._install_signals(wake_w)
        try:
            with tempfile.TemporaryDirectory(prefix="kraken-workers-") as tmp:
                notify = self._notify_socket(os.path.join(tmp, "notify"))
                self._selector.register(wake_r, selectors.EVENT_READ, "signal")
                self._selector.register(notify, selectors.EVENT_READ, "notify")
                try:
                    if self._start_all():
                        self._supervise()
                    return self._stop_all()
                finally:
                    self._kill_all()  # only reached with live children on an unexpected error
                    self._selector.close()
                    notify.close()
        finally:
            signal.set_wakeup_fd(-1)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _start_all(self) -> bool:
        """Spawn every slot and wait until all are ready; False means stop (or failed).

        Worker 0 starts alone and the others once it is ready: it creates the database
        and switches it to WAL, which SQLite refuses at once ("database is locked",
        without waiting on busy_timeout) to two processes opening a new file together.
        """
        deadline = time.monotonic() + self._start_timeout_s
        self._spawn(self.slots[0])
        while not self._shutdown.stopping:
            if self.slots[0].state == "ready" and self.slots[-1].state == "new":
                for slot in self.slots[1:]:
                    self._spawn(slot)
            if any(s.state == "backoff" for s in self.slots):
                log.error("a worker exited during startup; stopping")
                self._failed = True
                return False
            if all(s.state == "ready" for s in self.slots):
                pids = " ".join(str(s.proc.pid) for s in self.slots if s.proc)
                log.info("all %d workers ready (pids %s)", len(self.slots), pids)
                sdnotify.ready(f"{len(self.slots)} workers serving")
                return True
            if time.monotonic() >= deadline:
                log.error("workers not ready after %.0fs; stopping", self._start_timeout_s)
                self._failed = True
                return False
            self._pump(deadline - time.monotonic())
        return False

    def _supervise(self) -> None:
        """Restart dead workers and forward reloads until a stop signal (or a give-up)."""
        while not self._shutdown.stopping and not self._failed:
            now = time.monotonic()
            for slot in self.slots:
                if slot.state == "backoff" and slot.restart_at <= now:
                    self._spawn(slot)
            if self._reload_requested:
                self._start_reload()
            if self._reloading and now >= self._reload_deadline:
                log.warning("workers %s did not confirm the reload within %.0fs",
                            sorted(self._reloading), self._reload_timeout_s)
                self._reloading.clear()
                sdnotify.ready(f"{len(self.slots)} workers serving")
            timeouts = [s.restart_at - now for s in self.slots if s.state == "backoff"]
            if self._reloading:
                timeouts.append(self._reload_deadline - now)
            self._pump(min([1.0, *timeouts]))

    def _stop_all(self) -> int:
        """SIGTERM every child, wait until the drain deadline, SIGKILL what is left; a second
        stop signal meanwhile sends the children that can take it ``CUT_SIGNAL``."""
        self._reloading.clear()  # abandoned: its READY=1 must not follow STOPPING=1
        sdnotify.stopping("draining workers")
        for slot in self.slots:
            if slot.state in ("starting", "ready"):
                self._signal(slot, signal.SIGTERM)
                slot.move("stopping")
            elif slot.state in ("new", "backoff"):
                slot.move("stopped")
        deadline = time.monotonic() + self._stop_deadline_s
        cut_sent = False
        while any(s.state == "stopping" for s in self.slots):
            if self._shutdown.state is CUT_SHORT and not cut_sent:
                cut_sent = True
                for slot in self.slots:  # one that never reported READY=1 has no handler
                    if slot.state == "stopping" and slot.reported:
                        self._signal(slot, CUT_SIGNAL)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill_all()
                break
            self._pump(min(remaining, 1.0))
        clean = all(s.clean for s in self.slots)
        log.info("workers stopped%s", "" if clean else " (not all cleanly)")
        return self._exit_status()

    def _exit_status(self) -> int:
        """0 if every worker stopped cleanly; 75 if the only trouble is records some left in
        their journals (as one process exits); 1 for anything else."""
        if self._failed:
            return 1
        unclean = [s for s in self.slots if not s.clean]
        if not unclean:
            return 0
        if all(s.code == EXIT_RECORDS_IN_JOURNAL for s in unclean):
            return EXIT_RECORDS_IN_JOURNAL
        return 1

    # -- children ----------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        slot.move("starting")
        slot.started_at, slot.reported = time.monotonic(), False
        try:
            slot.proc = subprocess.Popen(self._command(slot.index), env=self._env)
        except OSError as exc:  # e.g. EAGAIN from fork: retried like a crash
            self._exited(slot, f"could not start: {exc}")
            return
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.proc is None or slot.proc.poll() is None:
                continue
            code, pid = slot.proc.returncode, slot.proc.pid
            slot.proc = None
            if pid in self._reloading:  # it will read the new files when it restarts
                self._reloading.discard(pid)
                if not self._reloading:
                    sdnotify.ready(f"{len(self.slots)} workers serving")
            slot.code = code
            if slot.state == "stopping":
                slot.clean = code == 0 or (code == -signal.SIGTERM and not slot.reported)
                slot.move("stopped")
                log.log(logging.INFO if slot.clean else logging.WARNING,
                        "worker %d (pid %d) exited with %s", slot.index, pid, _describe(code))
            else:
                self._exited(slot, f"(pid {pid}) exited with {_describe(code)}")

    def _exited(self, slot: Slot, what: str) -> None:
        """An unexpected exit: back off (longer each time it comes soon after a start)."""
        lived = time.monotonic() - slot.started_at
        quick = lived < self._stable_s or slot.state != "ready"
        slot.failures = slot.failures + 1 if quick else 1
        delay = min(self._backoff_s * 2 ** (slot.failures - 1), self._backoff_max_s)
        slot.restart_at = time.monotonic() + delay
        slot.move("backoff")
        log.warning("worker %d %s after %.1fs; restart in %.1fs", slot.index, what, lived, delay)
        if slot.failures > self._max_failures:
            log.error("worker %d failed %d times in a row; stopping all workers",
                      slot.index, slot.failures)
            self._failed = True

    def _signal(self, slot: Slot, sig: int) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            slot.proc.send_signal(sig)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                log.error("worker %d (pid %d) still running: SIGKILL", slot.index, slot.proc.pid)
                slot.proc.kill()
                slot.proc.wait(5)
                # its journal is replayed when this slot starts again
            if slot.proc is not None:
                slot.clean, slot.code = False, -signal.SIGKILL
                slot.proc = None
                slot.state = "stopped"  # from any state: this is the last resort

    def _start_reload(self) -> None:
        """Forward SIGHUP to ready children only: one still starting has no handler yet
        (SIGHUP would kill it), and it reads the certificate files as it starts anyway."""
        self._reload_requested = False
        sdnotify.reloading("reloading workers")
        for slot in self.slots:
            if slot.state == "ready" and slot.proc is not None:
                self._reloading.add(slot.proc.pid)
                self._signal(slot, signal.SIGHUP)
        self._reload_deadline = time.monotonic() + self._reload_timeout_s
        if not self._reloading:
            sdnotify.ready(f"{len(self.slots)} workers serving")

    # -- events: signals and the children's sd_notify datagrams ------------------------

    def _pump(self, timeout: float) -> None:
        for key, _ in self._selector.select(max(timeout, 0.0)):
            if key.data == "signal":
                self._on_signals(key.fileobj.recv(64))
            else:
                self._on_notify(key.fileobj)
        self._reap()

    def _on_signals(self, numbers: bytes) -> None:
        for number in numbers:
            if number in (signal.SIGTERM, signal.SIGINT):
                name = signal.Signals(number).name
                if self._shutdown.stop(name):
                    log.info("%s: stopping %d workers", name, len(self.slots))
            elif number == signal.SIGHUP and self._shutdown.reload():
                self._reload_requested = True

    def _on_notify(self, sock: socket.socket) -> None:
        for _ in range(64):  # bounded: the rest waits for the next select
            try:
                data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except BlockingIOError:
                return
            pid = next((_UCRED.unpack(d[: _UCRED.size])[0] for level, kind, d in ancdata
                        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            slot = next((s for s in self.slots if s.proc is not None and s.proc.pid == pid), None)
            if slot is None:
                continue  # a child already reaped, or not ours
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
            if fields.get("READY") == "1":
                if slot.state == "starting":
                    slot.move("ready")
                    slot.reported = True
                    log.info("worker %d ready (pid %d)", slot.index, pid)
                elif pid in self._reloading:
                    self._reloading.discard(pid)
                    log.info("worker %d reloaded (pid %d)", slot.index, pid)
                    if not self._reloading:
                        sdnotify.ready(f"{len(self.slots)} workers serving")

    def _notify_socket(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(path)  # in a fresh 0700 directory: only this user's processes reach it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self._env = {**os.environ, "NOTIFY_SOCKET": path, SUPERVISOR_PID_ENV: str(os.getpid())}
        return sock

    def _install_signals(self, wake: socket.socket) -> dict[int, object]:
        """The handlers do nothing: the wakeup fd carries each signal number to select()."""
        wake.setblocking(False)
        signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        return {sig: signal.signal(sig, _ignore) for sig in sigs}


def _ignore(signum: int, frame: object) -> None:
    pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
