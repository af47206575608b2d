"""bench/run.py's load scenarios on one running target, each with its CPU (and memory) read
around it: the three steady loads, the burst of streams opened at once, the hold of many slow
streams, and one round of ``--cpu-rounds``."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from load import BODY, run_load
from procs import BusyMeter, PeakRss, cpu_seconds, memory_kib

if TYPE_CHECKING:
    from run import Target


SCENARIOS = (  # name, stream, concurrency, args attribute holding the request count
    ("stream_c1", True, 1, "stream1"),
    ("stream_c32", True, 32, "stream32"),
    ("nonstream_c32", False, 32, "nonstream"),
)


def burst(target: Target, args) -> dict:
    """``args.burst`` streams opened at once (one connection each), the mock pacing every chunk;
    the target's RSS sampled throughout for the memory each open stream costs, and its CPU: how
    busy it was from the first request sent to the last first byte (near 1.0, one core all
    along: the target's own work sets the TTFB; well below: it waits on the mock or client)."""
    pids = target.pids()
    before, cpu0, sampler = memory_kib(pids, "VmRSS"), cpu_seconds(pids), PeakRss(pids)
    meter = BusyMeter(pids)
    sampler.start()
    meter.start()
    body = {**BODY, "mock": {"chunks": args.chunks, "chunk_delay_ms": args.burst_chunk_delay_ms}}
    result = run_load(target.url, True, args.burst, args.burst, args.burst_seconds, body=body,
                      timeline=True)
    meter.stop()
    first, last = result.get("first_sent"), result.get("last_first_byte")
    busy = meter.busy(first, last) if first and last else None
    result["busy_to_last_first_byte"] = round(busy, 3) if busy is not None else None
    result["cpu_us_per_stream"] = per_stream_us(busy, first, last, args.burst)
    peak = max(sampler.stop(), memory_kib(pids, "VmRSS"), before)
    result.update(cpu_s=round(cpu_seconds(pids) - cpu0, 3), rss_before_kib=before, rss_peak_kib=peak)
    result["kib_per_stream"] = round((peak - before) / args.burst, 2) if args.burst else None
    # every stream that did not end in a 200 with [DONE] (refused, broken, cut by the time cap)
    result["failed"] = args.burst - result.get("completed", 0) + result.get("bad_stream", 0)
    return result


def per_stream_us(busy: float | None, first: float | None, last: float | None,
                  streams: int) -> float | None:
    """The target's CPU µs per stream from the first request sent to the last first byte:
    what each stream's way to its first byte cost it (its share of the window's busy time)."""
    if busy is None or not first or not last or not streams:
        return None
    return round(busy * (last - first) * 1e6 / streams, 1)


def hold(target: Target, mock: Target, args) -> dict:
    """``args.hold`` streams of ``args.hold_chunks`` chunks held open at once, the mock pacing each
    chunk: the CPU the target spends relaying many slow streams (what an LLM gateway mostly does)."""
    body = {**BODY, "mock": {"chunks": args.hold_chunks, "chunk_delay_ms": args.hold_chunk_delay_ms}}
    result = scenario(target, mock, True, args.hold, args.hold, args, body=body,
                      seconds=args.hold_seconds)
    result["failed"] = args.hold - result.get("completed", 0) + result.get("bad_stream", 0)
    return result


def warm(target: Target, args) -> None:
    run_load(target.url, True, 32, args.warmup, args.max_seconds / 2)
    run_load(target.url, False, 32, args.warmup, args.max_seconds / 2)


def scenario(target: Target, mock: Target, stream: bool, concurrency: int, requests: int,
             args, body: dict | None = None, seconds: float | None = None) -> dict:
    """One load run (``body``, capped at ``seconds``: by default the bench's request and
    ``--max-seconds``) with the target's and the mock's CPU seconds read around it."""
    pids, mock_pids = target.pids(), mock.pids()
    cpu0, mock0 = cpu_seconds(pids), cpu_seconds(mock_pids)
    result = run_load(target.url, stream, concurrency, requests, seconds or args.max_seconds,
                      body=body)
    time.sleep(0.2)  # let batched after-response work (e.g. the meter flush) land in this scenario
    result["cpu_s"] = round(cpu_seconds(pids) - cpu0, 3)
    result["mock_cpu_s"] = round(cpu_seconds(mock_pids) - mock0, 3)
    return result


def cpu_round(target: Target, mock: Target, args) -> dict:
    """Round ``n`` of ``--cpu-rounds`` on the running, warm target: the scenarios (and the hold)
    once more, and the figures of the issue's rows they give (CPU ms a request, c=1 TTFB p50,
    the hold's CPU s)."""
    figures = {}
    for name, stream, conc, attr in SCENARIOS:
        result = scenario(target, mock, stream, conc, getattr(args, attr), args)
        done = result.get("completed")
        figures[f"cpu_ms_{name}"] = result["cpu_s"] * 1000 / done if done else None
        if name == "stream_c1":
            figures["stream_c1_ttfb_p50_ms"] = (result.get("ttfb_ms") or {}).get("p50")
    if args.hold:
        result = hold(target, mock, args)
        figures["hold_cpu_s"] = result["cpu_s"] if result.get("completed") else None
    return figures
