"""A closed loop through one Kraken: N non-stream requests at c connections, then the writer's figures.

Starts its own mock provider and Kraken (``kraken serve --demo``, the demo config with the
load client as a trusted proxy, as bench/run.py) on free ports, runs bench/loadgen.py in its own
process (bounded by ``--requests`` and ``--max-seconds``), reads /metrics, stops both by PID.
Prints completed / 503 / other answers, and what the record writer did: rows written, batches
(transactions) and their mean size and time, refusals by reason, the queue at the end.
Every request is recorded, so a writer slower than the hot path shows as 503 ``queue_full``.

    .venv/bin/python bench/closed_loop.py [--requests 100000] [--concurrency 32] [--max-seconds 180]

Exit status 0 only when every request was answered 200.
"""
from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import time
from pathlib import Path

from run import BODY, PATH, free_port, kraken_config, run_load, start, stop, tail, wait_answer

WRITER_METRICS = ("kraken_meter_records_written_total", "kraken_meter_flush_seconds_count",
                  "kraken_meter_flush_seconds_sum", "kraken_meter_queue_depth",
                  "kraken_overload_rejections_total")


def scrape(port: int) -> dict[str, float]:
    """Every unlabelled sample of the writer, and ``kraken_refused_total`` by reason."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in WRITER_METRICS or name.startswith("kraken_refused_total{"):
            out[name] = float(value)
    return out


def report(load: dict, before: dict[str, float], after: dict[str, float]) -> str:
    status = load.get("status", {})
    ok, shed = status.get("200", 0), status.get("503", 0)
    other = sum(n for s, n in status.items() if s not in ("200", "503"))
    other += load.get("connect_errors", 0)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("kraken_meter_flush_seconds_count")
    rows = delta("kraken_meter_records_written_total")
    lines = [
        f"requests: {ok} completed (200), {shed} refused 503, {other} other "
        f"in {load.get('seconds')} s = {load.get('rps')} req/s",
        f"writer: {rows:.0f} rows in {batches:.0f} transactions"
        + (f" (mean {rows / batches:.0f} rows, {delta('kraken_meter_flush_seconds_sum') / batches * 1000:.1f}"
           " ms each)" if batches else "")
        + f"; queue depth at the end {after.get('kraken_meter_queue_depth', 0):.0f}",
    ]
    refused = {k: delta(k) for k in after if k.startswith("kraken_refused_total{") and delta(k)}
    lines.append("refused by reason: " + (", ".join(f"{k[len('kraken_refused_total'):]} {v:.0f}"
                                                   for k, v in refused.items()) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-seconds", type=float, default=180.0, help="hard cap on the load")
    ap.add_argument("--start-seconds", type=float, default=30.0)
    args = ap.parse_args(argv)
    procs = []
    with tempfile.TemporaryDirectory(prefix="kraken-closed-loop-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            mock_port, port = free_port(), free_port()
            mock = start([sys.executable, "-m", "kraken.mock", "--host", "127.0.0.1",
                          "--port", str(mock_port)], tmp / "mock.log", tmp)
            procs.append(mock)
            if wait_answer(mock_port, mock, time.perf_counter(), args.start_seconds) is None:
                print(f"mock provider did not start:\n{tail(tmp / 'mock.log')}", file=sys.stderr)
                return 2
            conf = kraken_config(tmp, port, mock_port)
            kraken = start([sys.executable, "-m", "kraken", "serve", "--demo", "--config", str(conf)],
                           tmp / "kraken.log", tmp)
            procs.append(kraken)
            if wait_answer(port, kraken, time.perf_counter(), args.start_seconds) is None:
                print(f"Kraken did not start:\n{tail(tmp / 'kraken.log')}", file=sys.stderr)
                return 2
            before = scrape(port)
            load = run_load(f"http://127.0.0.1:{port}{PATH}", False, args.concurrency,
                            args.requests, args.max_seconds, body=BODY)
            time.sleep(0.5)  # the last records' batch (flush interval 200 ms)
            after = scrape(port)
            print(report(load, before, after))
            if "error" in load:
                print("load generator:", load["error"], file=sys.stderr)
            shed_lines = [line for line in (tmp / "kraken.log").read_text(errors="replace")
                          .splitlines() if "refusing requests" in line]
            print(f"shedding log lines: {len(shed_lines)}" + (f" (last: {shed_lines[-1][-160:]})"
                                                             if shed_lines else ""))
            status = load.get("status", {})
            return 0 if status.get("200", 0) == args.requests and len(status) == 1 else 1
        finally:
            for proc in reversed(procs):
                stop(proc)


if __name__ == "__main__":
    sys.exit(main())
