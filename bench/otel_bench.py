"""What [otel] costs per request: the same Kraken with and without an OTLP/HTTP exporter.

Starts the mock provider, an OTLP/HTTP receiver (a thread of this script that accepts every
export: the collector's side is not measured), and two Kraken processes on one config but for
``[otel]`` (every request sampled, the worst case). Rounds alternate off / on so both see the
same machine load; the figure is Kraken's own CPU per completed request (utime + stime of its
process tree from /proc, including the export thread), with p50 latency beside it, and the
on/off ratio.

    .venv/bin/python bench/otel_bench.py [--rounds 3] [--requests 3000] [--concurrency 16]

Measured (2 shared cores, --rounds 3 --requests 2000, c=16, every request sampled): non-stream
485 -> 670 us of CPU per request (x1.38), p50 7.5 -> 9.1 ms; stream 480 -> 645 us (x1.34), p50
8.1 -> 9.1 ms. About 45 us of it is the span built on the event loop (SDK start_span/end);
about 70 us per span is the OTLP protobuf encoding on the export thread (GIL); the rest is its
HTTP. A lower ``sample_ratio`` scales both.
"""
from __future__ import annotations

import argparse
import http.server
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from run import (cpu_seconds, free_port, kraken_config, process_tree, run_load, start, stop,
                 tail, wait_port)


class Receiver(http.server.ThreadingHTTPServer):
    """Counts OTLP/HTTP exports; answers each with an empty ExportTraceServiceResponse."""

    daemon_threads = True
    exports = 0
    bytes = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.exports += 1
        self.server.bytes += len(body)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def measure(port: int, pid: int, stream: bool, args) -> tuple[float, float]:
    """(µs of Kraken CPU per request, p50 ms) for one load run."""
    pids = process_tree(pid)
    before = cpu_seconds(pids)
    out = run_load(f"http://127.0.0.1:{port}/v1/chat/completions", stream, args.concurrency,
                   args.requests, args.max_seconds, warmup=min(200, args.requests))
    used = cpu_seconds(pids) - before
    done = out.get("completed") or 0
    if not done or out.get("errors"):
        raise SystemExit(f"load failed: {out}")
    return used / done * 1e6, out["total_ms"]["p50"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kraken-otel-bench-"))
    receiver = Receiver(("127.0.0.1", 0), _Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    procs = []
    try:
        mock_port = free_port()
        mock = start([sys.executable, "-m", "kraken.mock", "--host", "127.0.0.1", "--port",
                      str(mock_port)], tmp / "mock.log", tmp)
        procs.append(mock)
        if not wait_port(mock_port, mock, 20):
            raise SystemExit(f"mock did not start:\n{tail(tmp / 'mock.log')}")
        krakens = {}
        for mode in ("off", "on"):
            port, where = free_port(), tmp / mode
            where.mkdir()
            conf = kraken_config(where, port, mock_port)
            if mode == "on":
                with conf.open("a") as f:
                    f.write(f'\n[otel]\nendpoint = "http://127.0.0.1:{receiver.server_port}"\n')
            proc = start([sys.executable, "-m", "kraken", "serve", "--demo", "--config", str(conf)],
                         where / "kraken.log", where)
            procs.append(proc)
            if not wait_port(port, proc, 30):
                raise SystemExit(f"kraken ({mode}) did not start:\n{tail(where / 'kraken.log')}")
            krakens[mode] = (port, proc.pid)
        figures: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for stream in (False, True):
                for mode in ("off", "on"):
                    figures.setdefault((mode, stream), []).append(
                        measure(*krakens[mode], stream, args))
        print(f"{'scenario':<12} {'off us/req':>11} {'on us/req':>10} {'ratio':>6} "
              f"{'off p50 ms':>11} {'on p50 ms':>10}")
        for stream in (False, True):
            off, on = figures[("off", stream)], figures[("on", stream)]
            cpu_off = sorted(c for c, _ in off)[len(off) // 2]
            cpu_on = sorted(c for c, _ in on)[len(on) // 2]
            p50_off = sorted(p for _, p in off)[len(off) // 2]
            p50_on = sorted(p for _, p in on)[len(on) // 2]
            name = "stream" if stream else "non-stream"
            print(f"{name:<12} {cpu_off:>11.0f} {cpu_on:>10.0f} {cpu_on / cpu_off:>6.2f} "
                  f"{p50_off:>11.2f} {p50_on:>10.2f}")
        print(f"(medians of {args.rounds} rounds, c={args.concurrency}, {args.requests} requests "
              f"each; receiver got {receiver.exports} exports, {receiver.bytes} bytes)")
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        receiver.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
