"""The event loop's CPU per request line (kraken/gateway/request_log.py), writes included.

Emits ``--lines`` request lines on uvloop, ``--per-turn`` of them per loop turn (1: requests
ending one per turn, as at c=1; 32: a burst's), and prints the loop thread's CPU per line
(``time.thread_time``) and the whole process's (``time.process_time``: the log writer's thread
too), medians of 7 rounds. Run it with stdout on a pipe someone reads, as journald does; a file
or /dev/null makes a write nearly free:

    .venv/bin/python bench/log_cost.py --per-turn 1 | cat > /dev/null
    .venv/bin/python bench/log_cost.py --per-turn 32 | cat > /dev/null
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import uvloop

from kraken.config import LoggingConfig
from kraken.gateway.call import Call
from kraken.gateway.request_log import RequestLog


def finished_call() -> Call:
    call = Call(0, "chat_completions")
    call.reserved = True
    call.status, call.provider = 200, "bench"
    call.model_requested = call.model_dispatched = "mock-gpt"
    call.end_ns = 1_000_000
    return call


async def measure(lines: int, per_turn: int) -> tuple[float, float]:
    log = RequestLog(LoggingConfig())
    call = finished_call()
    rec = call.to_record()

    async def run(n: int) -> None:
        for _ in range(n // per_turn):
            for _ in range(per_turn):
                log.emit(call, rec)
            await asyncio.sleep(0)  # the loop's next turn

    await run(2000)  # warm up (and start the writer's thread)
    rounds = []
    for _ in range(7):
        thread, process = time.thread_time(), time.process_time()
        await run(lines)
        rounds.append(((time.thread_time() - thread) / lines * 1e6,
                       (time.process_time() - process) / lines * 1e6))
    return statistics.median(r[0] for r in rounds), statistics.median(r[1] for r in rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=32000, help="lines per round")
    ap.add_argument("--per-turn", type=int, default=1, help="lines per loop turn")
    args = ap.parse_args()
    loop_us, process_us = uvloop.run(measure(args.lines, args.per_turn))
    print(f"{args.per_turn} line(s) a turn: {loop_us:.2f} µs of the loop thread's CPU a line, "
          f"{process_us:.2f} µs of the process's", file=sys.stderr)


if __name__ == "__main__":
    main()
