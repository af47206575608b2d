"""Child processes of the benches: free ports, start and stop by PID, readiness, and the CPU
time and memory of a process tree read from /proc (so load generators never share the targets'
accounting). Shared by bench/run.py and the benches that import from it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, seconds: float) -> bool:
    """True once 127.0.0.1:port accepts; False if the process died or time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


_IDENTIFY = ("import platform; maps = open('/proc/self/maps').read(); "
             "print(platform.python_implementation(), platform.python_version() + ',', "
             "'shared libpython' if '/libpython' in maps else 'static')")


def interpreter(python: str) -> str:
    """What ``python`` is, for a report: implementation, version, and whether it runs CPython
    from a shared libpython (position-independent: ``--enable-shared``, as pyenv builds often
    are) or a static one (Debian's python3.11). The build moves every CPU figure
    (bench/README.md, "Interpreter")."""
    try:
        out = subprocess.run([python, "-c", _IDENTIFY], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} ({exc.__class__.__name__})"
    return f"{python} ({out.stdout.strip() or 'did not run: ' + out.stderr.strip()[-200:]})"


def pin_driver(pin: bool = True) -> set[int] | None:
    """The shape issue 13's figures were measured in: the measured target alone on the first
    core, the mock and the load client on the others. Moves this process (and so every child
    it starts) off that core and returns it, for ``start(cores=...)``; None when not asked or on
    a single core (nothing pinned)."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2:
        return None
    os.sched_setaffinity(0, set(cores[1:]))
    return {cores[0]}


def start(cmd: list[str], log: Path, cwd: Path,
          cores: set[int] | None = None) -> subprocess.Popen:
    """``cores``: the target's own core(s) (``pin_driver``), set in the child before exec so
    every thread and worker it starts inherits them."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = open(log, "wb")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, preexec_fn=pinned(cores))
    finally:
        out.close()


def pinned(cores: set[int] | None):
    """A ``preexec_fn`` that pins the child to ``cores`` (None: no ``preexec_fn``)."""
    return None if cores is None else (lambda: os.sched_setaffinity(0, cores))


def stop(proc: subprocess.Popen | None) -> None:
    """SIGTERM this one child (by PID), then SIGKILL if it ignores us for 5 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- /proc accounting


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # fields from #3 (state) on; comm may hold spaces


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (nginx workers, Kraken workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of live processes (fields 14 and 15 of /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
            ticks += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            pass
    return ticks / CLK_TCK


def run_ns(pids: list[int]) -> int | None:
    """Nanoseconds every thread of the live processes has run (the first field of
    /proc/<pid>/task/<tid>/schedstat): finer than utime + stime's 10 ms ticks, for windows of
    tens of milliseconds. None where the kernel keeps no schedstat."""
    total, seen = 0, False
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
                    seen = True
            except (OSError, ValueError, IndexError):
                pass
    return total if seen else None


def memory_kib(pids: list[int], key: str) -> int:
    """Sum of ``key`` (VmRSS or VmHWM) over the processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


# ----------------------------------------------------------------------------- targets


class BusyMeter(threading.Thread):
    """Samples (``time.perf_counter()``, ``run_ns(pids)``) every ``every`` seconds until
    ``stop``; ``busy`` then says how many cores' worth the processes ran over a window."""

    def __init__(self, pids: list[int], every: float = 0.005):
        super().__init__(daemon=True)
        self.pids, self.every, self._stop_event = pids, every, threading.Event()
        self.samples: list[tuple[float, int]] = []

    def _sample(self) -> None:
        ns = run_ns(self.pids)
        if ns is not None:
            self.samples.append((time.perf_counter(), ns))

    def run(self) -> None:
        self._sample()
        while not self._stop_event.wait(self.every):
            self._sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self._sample()

    def busy(self, start: float, end: float) -> float | None:
        """CPU seconds per second between perf_counter times ``start`` and ``end`` (1.0: one
        core all along), from the samples just outside the window (it widens by up to
        ``every`` at each end); None without samples on both sides."""
        before = [s for s in self.samples if s[0] <= start]
        after = [s for s in self.samples if s[0] >= end]
        if not before or not after or after[0][0] <= before[-1][0]:
            return None
        (t0, n0), (t1, n1) = before[-1], after[0]
        return (n1 - n0) / 1e9 / (t1 - t0)


class PeakRss(threading.Thread):
    """Samples the summed VmRSS of ``pids`` every ``every`` seconds until ``stop``; keeps the max."""

    def __init__(self, pids: list[int], every: float = 0.01):
        super().__init__(daemon=True)
        self.pids, self.every, self.peak, self._stop_event = pids, every, 0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            self.peak = max(self.peak, memory_kib(self.pids, "VmRSS"))

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak
