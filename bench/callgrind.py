"""User-space instructions Kraken executes per request, counted by valgrind's callgrind: a figure
a shared VM's noise cannot move, with C counted as well as Python (bench/README.md, "Instructions").

Each run starts the mock and a Kraken under callgrind (instrumentation off) on free loopback ports,
warms it with ``--warmup`` requests, counts ``--requests`` more, and prints the instructions per
request of the whole Kraken process: the event loop, the store's driver thread, the bcrypt pool;
its kernel work is not counted. Work driven by time, not by requests (the revocation and BYOK
polls, timers), runs as often as ever while the requests run ~50x slower, and moved a run's figure
by several percent: ``--idle-seconds`` counts it alone first, and its rate times the load's
duration is taken off. ``--a``/``--b`` compare two checkouts, runs interleaved
``--rounds`` times; ``--top N`` lists the N functions with the most instructions of each run's
event loop; ``--keep DIR`` keeps the dumps for ``callgrind_annotate`` (``--tree=caller``: who
called what). Each thread is counted apart: the event loop's own figure (the main thread, the
request's path) is printed beside the whole process's; the store's thread, whose batches vary
with timing, makes most of the spread between runs.

    .venv/bin/python bench/callgrind.py --a ../base --b . --rounds 3
    .venv/bin/python bench/callgrind.py --stream --top 30

Needs ``valgrind`` (``apt-get install -y valgrind``). Under callgrind Kraken runs ~50x slower,
so a run of the defaults takes ~20 s; every load is bounded in requests and seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from ab import spawn
from procs import free_port, interpreter, stop
from run import BODY, kraken_config, run_load, wait_answer

PATH = "/v1/chat/completions"


def totals(dump: Path) -> int:
    """The ``totals:`` line of a callgrind dump: instructions (Ir) over the counted window."""
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"{dump}: no totals line (not a callgrind dump?)")


def per_request(instructions: int, requests: int) -> int:
    return round(instructions / requests) if requests else 0


def dump_parts(work: Path, pid: str) -> dict[int, list[Path]]:
    """The dumps of process ``pid`` by dump number, each a file per thread
    (``--separate-threads=yes``: ``callgrind.out.<pid>.<n>-<thread>``, thread 01 the main one)."""
    parts: dict[int, list[Path]] = {}
    for path in work.glob(f"callgrind.out.{pid}.*"):
        number = path.name.rsplit(".", 1)[1].split("-")[0]
        if number.isdigit():
            parts.setdefault(int(number), []).append(path)
    return {n: sorted(paths) for n, paths in parts.items()}


def dumped(work: Path, pid: str, number: int,
           seconds: float = 60.0) -> tuple[list[Path], int, int]:
    """Dump ``number``'s files (the main thread's first) and ``thread_totals`` of them, once
    callgrind has written them all: ``callgrind_control --dump`` may return before it has (a run
    once found no dump at all and stopped). Waits at most ``seconds``; each file read once."""
    deadline = time.monotonic() + seconds
    while True:
        parts = dump_parts(work, pid).get(number, [])
        try:
            if parts and is_main_thread(parts[0]):  # the event loop's part is the figure
                return (parts, *thread_totals(parts))
        except (OSError, ValueError):
            pass  # a part still being written: no totals line yet
        if time.monotonic() > deadline:
            raise SystemExit(f"callgrind wrote no complete dump {number} of {pid} in {seconds:g} s")
        time.sleep(0.1)


def is_main_thread(dump: Path) -> bool:
    return dump.name.endswith("-01")


def thread_totals(dumps: list[Path]) -> tuple[int, int]:
    """One dump's instructions: all its threads', and the main thread's (the event loop)."""
    counts = [(totals(d), is_main_thread(d)) for d in dumps]
    return sum(n for n, _ in counts), sum(n for n, main in counts if main)


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


class Counted(NamedTuple):
    """One run's instructions a request: the whole process's, the event loop's alone (the main
    thread: the request's path, steadier than the store's thread, whose batches vary), and the
    main thread's dump."""
    total: int
    loop: int
    dump: Path


def counted_run(checkout: Path, python: str, work: Path, args) -> Counted:
    """One Kraken from ``checkout`` under callgrind: its instructions per request and its dump."""
    mock_port, port = free_port(), free_port()
    work.mkdir(parents=True)
    mock = subprocess.Popen([sys.executable, "-m", "kraken.mock", "--port", str(mock_port),
                             "--chunks", str(args.chunks)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
           f"--callgrind-out-file={work}/callgrind.out.%p", python, "-m", "kraken", "serve",
           "--demo", "--config", str(kraken_config(work, port, mock_port))]
    proc = spawn(cmd, checkout, work / "kraken.log")
    try:
        if wait_answer(port, proc, time.perf_counter(), args.start_seconds) is None:
            raise SystemExit(f"Kraken under callgrind did not answer:\n"
                             f"{(work / 'kraken.log').read_text(errors='replace')[-2000:]}")
        url = f"http://127.0.0.1:{port}{PATH}"
        run_load(url, args.stream, args.concurrency, args.warmup, args.max_seconds, body=BODY)
        pid = str(proc.pid)
        control("--instr=on", pid)
        idle_rate = idle_main = 0.0
        dumps_made = 0
        if args.idle_seconds > 0:  # the time-driven work alone: polls, timers, empty flushes
            began = time.monotonic()
            time.sleep(args.idle_seconds)
            control("--dump", pid)  # a dump holds what ran since the last one
            seconds = time.monotonic() - began
            dumps_made += 1
            _, *idle = dumped(work, pid, dumps_made)
            idle_rate, idle_main = (n / seconds for n in idle)
        began = time.monotonic()
        done = run_load(url, args.stream, args.concurrency, args.requests, args.max_seconds,
                        body=BODY).get("completed", 0)
        control("--instr=off", pid)
        window = time.monotonic() - began
        control("--dump", pid)
        dumps, whole, main = dumped(work, pid, dumps_made + 1)
        if done != args.requests:
            raise SystemExit(f"only {done} of {args.requests} requests completed")
        return Counted(per_request(round(whole - idle_rate * window), done),
                       per_request(round(main - idle_main * window), done), dumps[0])
    finally:
        stop(proc)
        stop(mock)


def top_functions(dump: Path, n: int) -> str:
    """The ``n`` functions with the most instructions of their own (callgrind_annotate)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", str(dump)],
                         capture_output=True, text=True, timeout=120).stdout
    rows = [line for line in out.splitlines() if "(" in line and "%)" in line
            and "PROGRAM TOTALS" not in line]
    return "\n".join("    " + row.strip()[:140] for row in rows[:n])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, default=Path("."), help="checkout A (default: this one)")
    ap.add_argument("--b", type=Path, help="checkout B, compared with A")
    ap.add_argument("--python", default=sys.executable, help="interpreter running Kraken")
    ap.add_argument("--stream", action="store_true", help="streamed requests (default: non-stream)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    ap.add_argument("--requests", type=int, default=500, help="counted requests")
    ap.add_argument("--warmup", type=int, default=200, help="uncounted requests first")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--idle-seconds", type=float, default=5.0,
                    help="count this long with no load first, and take that rate of "
                         "time-driven work times the load's duration off its count (0: keep it)")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each checkout, interleaved")
    ap.add_argument("--top", type=int, default=0, help="list this many functions per run")
    ap.add_argument("--keep", type=Path, help="keep the dumps in this directory (callgrind_annotate)")
    ap.add_argument("--max-seconds", type=float, default=300, help="cap per load")
    ap.add_argument("--start-seconds", type=float, default=120, help="cap on Kraken's start")
    args = ap.parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y valgrind", file=sys.stderr)
            return 2
    print(f"Kraken runs on {interpreter(args.python)}; "
          f"{'streamed' if args.stream else 'non-stream'} requests, {args.requests} counted "
          f"at concurrency {args.concurrency}", flush=True)
    checkouts = {"A": args.a.resolve()} | ({"B": args.b.resolve()} if args.b else {})
    figures: dict[str, list[Counted]] = {name: [] for name in checkouts}
    with contextlib.ExitStack() as cleanup:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix="run-", dir=args.keep)
        else:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="kraken-callgrind-"))
        for n in range(args.rounds):
            for name, checkout in checkouts.items():
                run = counted_run(checkout, args.python, Path(tmp) / f"{name}{n}", args)
                figures[name].append(run)
                print(f"  round {n + 1} {name}: {run.total:,} instructions a request "
                      f"(event loop {run.loop:,})", flush=True)
                if args.top:
                    print(top_functions(run.dump, args.top), flush=True)
                if args.keep:
                    print(f"    dump (event loop): {run.dump}", flush=True)
    for field in ("total", "loop"):
        print(f"{'whole process' if field == 'total' else 'event loop alone'}:")
        medians = {}
        for name, runs in figures.items():
            values = sorted(getattr(r, field) for r in runs)
            medians[name] = values[len(values) // 2]
            print(f"  {name} ({checkouts[name]}): "
                  + " / ".join(f"{getattr(r, field):,}" for r in runs))
        if args.b:
            a, b = medians["A"], medians["B"]
            print(f"  medians: A {a:,}, B {b:,}: B - A = {b - a:+,} ({(b - a) / a:+.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
