"""Interleaved A/B of one bench/run.py scenario between two checkouts, nginx in every round.

On a machine whose speed drifts (a shared VM), figures from separate bench/run.py runs do not
compare: the same tree moves by a third from one run to the next. Rounds that run A, B and nginx
back to back do, as ratios to that round's nginx. Each round starts fresh processes (one mock for
all), warms them, and runs the scenario once per target, in A-B-nginx order rotated by one
each round (each target in each place equally often). As in bench/run.py, each target runs
alone on the first core, the mock and the load client on the others (``--no-pin``: not
pinned).

    .venv/bin/python bench/ab.py --a ../kraken-f1b79af --b . --scenario hold --rounds 4
    .venv/bin/python bench/ab.py --a ../old --b . --scenario burst --rounds 8
    .venv/bin/python bench/ab.py --a . --b . --python-b ../deb/bin/python --scenario c1  # interpreters
    .venv/bin/python bench/ab.py --a ../old --b . --scenario nonstream --body-kib 32      # long bodies

Scenarios, as bench/run.py runs them: ``hold`` (1000 streams x 200 chunks, 50 ms apart: the
target's CPU seconds, user and sys), ``burst`` (1000 streams at once, 20 chunks 50 ms apart:
TTFB p50 ms), ``c1`` (3000 streamed requests one at a time: TTFB p50 ms), ``nonstream`` (5000
non-streamed requests at c=32: the target's CPU ms per request).

Lower is better in every scenario. Besides each side's ratio to nginx, the summary gives each
target's median figure and a sign test: in how many rounds B was below A, and how likely a
split at least that uneven is when A and B do not differ (two-sided). The burst's p50 moves by
~5% between runs of the same pair at 12 rounds: a change of a few percent needs 24 or more,
and a p well below 0.05 before it is believed.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (BODY, PATH, conversation, find_nginx, kraken_config, nginx_config, run_load,
                 wait_answer)
from procs import free_port, interpreter, pin_driver, pinned, process_tree, stop
from rounds import interleaved, median_or_none, per_round_ratios, ratio_line

SCENARIOS = {
    "hold": dict(stream=True, concurrency=1000, requests=1000, seconds=60,
                 body={**BODY, "mock": {"chunks": 200, "chunk_delay_ms": 50}}),
    "burst": dict(stream=True, concurrency=1000, requests=1000, seconds=60,
                  body={**BODY, "mock": {"chunks": 20, "chunk_delay_ms": 50}}),
    "c1": dict(stream=True, concurrency=1, requests=3000, seconds=60, body=None, warmup=300),
    "nonstream": dict(stream=False, concurrency=32, requests=5000, seconds=60, body=None),
}


def spawn(cmd: list[str], cwd: Path, log: Path, cores: set[int] | None = None) -> subprocess.Popen:
    """A target from its own checkout: its ``kraken`` package first on the path (on ``cores``)."""
    env = dict(os.environ, PYTHONPATH=str(cwd))
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=pinned(cores))


def user_sys(pids: list[int]) -> tuple[float, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / ticks, system / ticks


def measure(name: str, port: int, proc: subprocess.Popen, scenario: str,
            body_kib: float = 0.0) -> float:
    """Run the scenario once against a warmed target; its figure (CPU s or TTFB p50 ms).
    ``body_kib``: requests carry a conversation of that size (bench/run.py's long body)."""
    spec = dict(SCENARIOS[scenario])
    if body_kib:
        spec["body"] = {**(spec["body"] or {}), **conversation(body_kib)}
    url = f"http://127.0.0.1:{port}{PATH}"
    run_load(url, True, 32, 500, 30)  # warm-up
    pids = process_tree(proc.pid)
    before = user_sys(pids)
    result = run_load(url, spec["stream"], spec["concurrency"], spec["requests"], spec["seconds"],
                      warmup=spec.get("warmup", 0), body=spec["body"])
    after = user_sys(pids)
    user, system = after[0] - before[0], after[1] - before[1]
    if scenario == "hold":
        print(f"  {name:6} CPU {user + system:.2f} s (user {user:.2f}, sys {system:.2f})", flush=True)
        return user + system
    if scenario == "nonstream":
        per = (user + system) * 1000 / max(1, result.get("completed") or 0)
        print(f"  {name:6} CPU {per:.4f} ms / request (user {user:.2f} s, sys {system:.2f} s)",
              flush=True)
        return per
    p50 = (result.get("ttfb_ms") or {}).get("p50") or float("nan")
    print(f"  {name:6} TTFB p50 {p50:.3f} ms", flush=True)
    return p50


def run_target(args, tmp: Path, mock_port: int, name: str) -> float:
    """A fresh process of ``name`` (A, B or nginx), warmed, and its figure for the scenario."""
    port = free_port()
    if name == "nginx":
        cmd = [args.nginx, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c",
               str(nginx_config(tmp, port, mock_port)), "-g", "daemon off;"]
        cwd = args.b
    else:
        cwd = args.a if name == "A" else args.b
        work = tmp / name
        shutil.rmtree(work, ignore_errors=True)  # each round from an empty store
        work.mkdir()
        python = args.python_a if name == "A" else args.python_b
        cmd = [python, "-m", "kraken", "serve", "--demo", "--config",
               str(kraken_config(work, port, mock_port))]
    proc = spawn(cmd, cwd, tmp / f"{name}.log", args.cores)
    try:
        if wait_answer(port, proc, time.perf_counter(), 30) is None:
            raise SystemExit(f"{name} did not start:\n{(tmp / (name + '.log')).read_text()[-2000:]}")
        return measure(name, port, proc, args.scenario, args.body_kib)
    finally:
        stop(proc)


def sign_test(a: list[float], b: list[float]) -> tuple[int, int, float]:
    """(rounds B was below A, rounds that differed, two-sided p of a split at least that
    uneven if neither side tends lower: the binomial tail at 1/2, doubled)."""
    below = sum(y < x for x, y in zip(a, b))
    differed = sum(y != x for x, y in zip(a, b))
    fewer = min(below, differed - below)
    tail = sum(math.comb(differed, k) for k in range(fewer + 1)) / 2 ** differed
    return below, differed, min(1.0, 2 * tail)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="checkout A (e.g. a worktree of the base)")
    ap.add_argument("--b", type=Path, default=Path("."), help="checkout B (default: this one)")
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="hold")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin each target alone on the first core (as bench/run.py)")
    ap.add_argument("--python-a", default=sys.executable,
                    help="interpreter running A (default: this one; an interpreter A/B passes "
                         "the same checkout as --a and --b)")
    ap.add_argument("--python-b", default=sys.executable, help="interpreter running B")
    ap.add_argument("--body-kib", type=float, default=0.0,
                    help="requests carry a conversation of about this size (default: 'hi')")
    args = ap.parse_args()
    args.cores = pin_driver(not args.no_pin)
    args.a, args.b = args.a.resolve(), args.b.resolve()
    args.nginx = find_nginx()
    if args.nginx is None:
        raise SystemExit("nginx is not installed (apt-get install -y nginx-light)")
    for side, python in (("A", args.python_a), ("B", args.python_b)):
        print(f"{side}: {interpreter(python)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kraken-ab-") as tmp_name:
        tmp = Path(tmp_name)
        mock_port = free_port()
        mock = spawn([sys.executable, "-m", "kraken.mock", "--port", str(mock_port)], args.b,
                     tmp / "mock.log")
        try:
            if wait_answer(mock_port, mock, time.perf_counter(), 30) is None:
                raise SystemExit(f"the mock did not start:\n{(tmp / 'mock.log').read_text()[-2000:]}")
            def one(name: str, n: int) -> float:
                if name == ("A" if n % 2 == 0 else "nginx"):  # the round's first
                    print(f"round {n + 1}", flush=True)
                return run_target(args, tmp, mock_port, name)

            seen = interleaved(["A", "B", "nginx"], args.rounds, one)
            for name in ("A", "B"):
                print(ratio_line(name, per_round_ratios(seen[name], seen["nginx"])))
            print("medians: " + ", ".join(f"{name} {median_or_none(values):.4g}"
                                          for name, values in seen.items()))
            below, differed, p = sign_test(seen["A"], seen["B"])
            print(f"B below A in {below} of {differed} rounds (sign test, two-sided p = {p:.3f})")
        finally:
            stop(mock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
