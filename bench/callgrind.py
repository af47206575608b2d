"""User-space instructions Kraken executes per request, counted by valgrind's callgrind: a figure
a shared VM's noise cannot move, with C counted as well as Python (bench/README.md, "Instructions").

Each run starts the mock and a Kraken under callgrind (instrumentation off) on free loopback ports,
warms it with ``--warmup`` requests, counts ``--requests`` more, and prints the instructions per
request of the whole Kraken process: the event loop, the store's driver thread, the bcrypt pool;
its kernel work is not counted. Work driven by time, not by requests (the revocation and BYOK
polls, timers), runs as often as ever while the requests run ~50x slower, and moved a run's figure
by several percent: ``--idle-seconds`` counts it alone first, and its rate times the load's
duration is taken off. ``--a``/``--b`` compare two checkouts, runs interleaved
``--rounds`` times; ``--top N`` lists the N functions with the most instructions of each run;
``--keep DIR`` keeps the dumps for ``callgrind_annotate`` (``--tree=caller``: who called what).

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


def latest(work: Path, pid: str) -> Path:
    return max(work.glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def counted_run(checkout: Path, python: str, work: Path, args) -> tuple[int, Path]:
    """One Kraken from ``checkout`` under callgrind: its instructions per request and its dump."""
    mock_port, port = free_port(), free_port()
    work.mkdir(parents=True)
    mock = subprocess.Popen([sys.executable, "-m", "kraken.mock", "--port", str(mock_port),
                             "--chunks", str(args.chunks)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
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
        idle_rate = 0.0
        if args.idle_seconds > 0:  # the time-driven work alone: polls, timers, empty flushes
            began = time.monotonic()
            time.sleep(args.idle_seconds)
            control("--dump", pid)  # a dump holds what ran since the last one
            idle_rate = totals(latest(work, pid)) / (time.monotonic() - began)
        began = time.monotonic()
        done = run_load(url, args.stream, args.concurrency, args.requests, args.max_seconds,
                        body=BODY).get("completed", 0)
        control("--instr=off", pid)
        window = time.monotonic() - began
        control("--dump", pid)
        dump = latest(work, pid)
        if done != args.requests:
            raise SystemExit(f"only {done} of {args.requests} requests completed")
        return per_request(round(totals(dump) - idle_rate * window), done), dump
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
    figures: dict[str, list[int]] = {name: [] for name in checkouts}
    with contextlib.ExitStack() as cleanup:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix="run-", dir=args.keep)
        else:
            tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="kraken-callgrind-"))
        for n in range(args.rounds):
            for name, checkout in checkouts.items():
                per, dump = counted_run(checkout, args.python, Path(tmp) / f"{name}{n}", args)
                figures[name].append(per)
                print(f"  round {n + 1} {name}: {per:,} instructions a request", flush=True)
                if args.top:
                    print(top_functions(dump, args.top), flush=True)
                if args.keep:
                    print(f"    dump: {dump}", flush=True)
    for name, values in figures.items():
        print(f"{name} ({checkouts[name]}): {' / '.join(f'{v:,}' for v in values)}")
    if args.b:
        a, b = sorted(figures["A"])[len(figures["A"]) // 2], sorted(figures["B"])[len(figures["B"]) // 2]
        print(f"medians: A {a:,}, B {b:,}: B - A = {b - a:+,} ({(b - a) / a:+.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
