"""HTTP/1.1 vs HTTP/2 (h2c, prior knowledge) into Kraken, measured with nghttp2's h2load.

Starts the mock provider and ``kraken serve --demo`` on 127.0.0.1 exactly as bench/run.py does
(its helpers are imported), then runs h2load once per protocol variant and mode, every run
bounded in requests (-n) and seconds (subprocess timeout, h2load's inactivity timeout):

    h1        --h1, C connections, 1 request in flight each (no pipelining)
    h2c       C connections, 1 stream each: the same concurrency over HTTP/2 framing
    h2c-mux   C/M connections, M streams each: the same concurrency, multiplexed

for non-streaming and streaming ``POST /v1/chat/completions`` (``-d`` body file, the demo
key in ``-H authorization``). Latency percentiles come from h2load's ``--log-file`` (one line
per request); CPU is Kraken's own process tree from /proc, per request.

    .venv/bin/python bench/h2load.py                       # -n 3000 -c 32 -m 8, < 1 min on 2 cores
    .venv/bin/python bench/h2load.py -n 10000 -c 64 -m 16 --chunks 50 --json out.json

Needs h2load (apt-get install -y nghttp2-client). Children are stopped by PID at the end.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from run import (BODY, DEMO_KEY, PATH, cpu_seconds, free_port, kraken_config,  # noqa: E402
                 probe, process_tree, start, stop, tail, wait_port)

MODES = ("non-stream", "stream")


def variants(conns: int, streams: int) -> list[tuple[str, list[str], int, int]]:
    """(name, h2load protocol flags, connections, streams per connection)."""
    mux_conns = max(1, conns // streams)
    return [
        ("h1", ["--h1"], conns, 1),
        ("h2c", [], conns, 1),
        ("h2c-mux", [], mux_conns, streams),
    ]


def run_h2load(url: str, body: Path, flags: list[str], conns: int, streams: int, requests: int,
               max_seconds: float, log: Path | None) -> dict:
    """One bounded h2load run; its summary lines parsed, plus percentiles from ``log``."""
    cmd = ["h2load", *flags, "-n", str(requests), "-c", str(conns), "-m", str(streams), "-t", "1",
           "-d", str(body), "-H", f"authorization: Bearer {DEMO_KEY}",
           "-H", "content-type: application/json", "-N", "10s"]
    if log is not None:
        cmd.append(f"--log-file={log}")
    cmd.append(url)
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=max_seconds, text=True)
    except subprocess.TimeoutExpired:
        return {"error": f"h2load exceeded {max_seconds:g} s", "cmd": " ".join(cmd)}
    result = parse_summary(out.stdout)
    result["cmd"] = " ".join(cmd)
    if out.returncode != 0 and "rps" not in result:
        result["error"] = (out.stderr or out.stdout)[-500:]
    if log is not None and log.exists():
        result.update(percentiles(log))
    return result


def parse_summary(text: str) -> dict:
    """The figures of h2load's report ("finished in", "requests:", "status codes:", ...)."""
    out: dict = {}
    for line in text.splitlines():
        words = line.replace(",", " ").split()
        if line.startswith("finished in"):
            out["seconds"] = _duration_s(words[2])
            out["rps"] = float(words[3])
        elif line.startswith("requests:"):
            out.update(total=int(words[1]), done=int(words[5]), succeeded=int(words[7]),
                       failed=int(words[9]), errored=int(words[11]), timeout=int(words[13]))
        elif line.startswith("status codes:"):
            out["2xx"] = int(words[2])
        elif line.startswith("time for request:"):
            out["mean_ms"] = _duration_s(words[5]) * 1000
            out["max_ms"] = _duration_s(words[4]) * 1000
        elif line.startswith("time to 1st byte:"):
            out["conn_ttfb_mean_ms"] = _duration_s(words[6]) * 1000
    return out


def _duration_s(text: str) -> float:
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)


def percentiles(log: Path) -> dict:
    """p50/p99 of per-request time from h2load's log (start µs, status, duration µs)."""
    times = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].startswith("2"):
            times.append(int(parts[2]) / 1000)
    if len(times) < 2:
        return {}
    cuts = statistics.quantiles(times, n=100)
    return {"p50_ms": cuts[49], "p99_ms": cuts[98]}


ROWS = (  # key, label, format
    ("rps", "req/s", "{:.0f}"),
    ("p50_ms", "latency p50 ms", "{:.2f}"),
    ("p99_ms", "latency p99 ms", "{:.2f}"),
    ("mean_ms", "latency mean ms", "{:.2f}"),
    ("max_ms", "latency max ms", "{:.2f}"),
    ("cpu_ms_per_req", "Kraken CPU ms/req", "{:.3f}"),
    ("ok", "2xx / requested", "{}"),
)


def render(results: dict[str, dict[str, dict]], names: list[str], labels: dict[str, str]) -> str:
    lines = []
    for mode in results:
        rows = [[mode, *(labels[n] for n in names)]]
        for key, label, fmt in ROWS:
            row = [label]
            for name in names:
                r = results[mode].get(name, {})
                value = f"{r.get('2xx', 0)}/{r.get('requested', 0)}" if key == "ok" else r.get(key)
                row.append("-" if value is None else fmt.format(value))
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                for r in rows]
        text.insert(1, "-" * len(text[0]))
        lines += text + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="h2load: HTTP/1.1 vs h2c into Kraken (mock provider).")
    ap.add_argument("-n", "--requests", type=int, default=3000, help="requests per run")
    ap.add_argument("-c", "--conns", type=int, default=32, help="concurrent requests (h1 connections)")
    ap.add_argument("-m", "--streams", type=int, default=8, help="streams per connection for h2c-mux")
    ap.add_argument("--warmup", type=int, default=300, help="unmeasured requests per protocol")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="cap per h2load run")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed response")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="mock delay between chunks")
    ap.add_argument("--modes", default=",".join(MODES), help="non-stream,stream")
    ap.add_argument("--start-seconds", type=float, default=30.0)
    ap.add_argument("--json", metavar="FILE", help="also write the raw results")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m in MODES]
    if shutil.which("h2load") is None:
        print("h2load not installed (apt-get install -y nghttp2-client)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="kraken-h2load-"))
    procs: list[subprocess.Popen] = []
    try:
        mock_port = free_port()
        mock = start([sys.executable, "-m", "kraken.mock", "--host", "127.0.0.1", "--port",
                      str(mock_port), "--chunks", str(args.chunks), "--chunk-delay-ms",
                      str(args.chunk_delay_ms)], tmp / "mock.log", tmp)
        procs.append(mock)
        if not wait_port(mock_port, mock, args.start_seconds):
            print(f"mock provider did not start:\n{tail(tmp / 'mock.log')}", file=sys.stderr)
            return 2
        port = free_port()
        conf = kraken_config(tmp, port, mock_port)
        kraken = start([sys.executable, "-m", "kraken", "serve", "--demo", "--config", str(conf)],
                       tmp / "kraken.log", tmp)
        procs.append(kraken)
        if not wait_port(port, kraken, args.start_seconds):
            print(f"kraken did not start:\n{tail(tmp / 'kraken.log')}", file=sys.stderr)
            return 2
        status, body = probe(port)
        if status != 200:
            print(f"kraken probe answered {status} {body[:300]!r}\n{tail(tmp / 'kraken.log')}",
                  file=sys.stderr)
            return 2

        url = f"http://127.0.0.1:{port}{PATH}"
        bodies = {"non-stream": tmp / "body.json", "stream": tmp / "body-stream.json"}
        bodies["non-stream"].write_text(json.dumps(BODY))
        bodies["stream"].write_text(json.dumps({**BODY, "stream": True}))
        runs = variants(args.conns, args.streams)
        labels = {name: f"{name} {c}x{m}" for name, _, c, m in runs}
        print(f"h2load into Kraken: {args.requests} requests per run, {args.conns} in flight "
              f"(connections x streams: {', '.join(labels.values())}); {args.chunks} chunks/stream, "
              f"{args.chunk_delay_ms:g} ms between chunks; <= {args.max_seconds:g} s per run", flush=True)

        results: dict[str, dict[str, dict]] = {mode: {} for mode in MODES}
        for name, flags, conns, streams in runs:
            for mode in modes:  # warm-up: JIT-free, but caches, pools and auth cache fill
                run_h2load(url, bodies[mode], flags, conns, streams, args.warmup,
                           args.max_seconds, None)
        for mode in modes:
            for name, flags, conns, streams in runs:
                pids = process_tree(kraken.pid)
                cpu0 = cpu_seconds(pids)
                log = tmp / f"{mode}-{name}.log"
                r = run_h2load(url, bodies[mode], flags, conns, streams, args.requests,
                               args.max_seconds, log)
                time.sleep(0.2)  # let after-response work (the meter flush) land in this run
                cpu = cpu_seconds(pids) - cpu0
                r["requested"] = args.requests
                r["cpu_s"] = round(cpu, 3)
                if r.get("2xx"):
                    r["cpu_ms_per_req"] = cpu * 1000 / r["2xx"]
                results[mode][name] = r
                print(f"  {mode:10} {labels[name]:14} {r.get('2xx', 0):6}/{args.requests} 2xx "
                      f"{r.get('rps') or 0:9.1f} req/s" + (f"  error: {r['error']}" if "error" in r else ""),
                      flush=True)
        print()
        print(render({m: results[m] for m in modes}, [name for name, *_ in runs], labels))
        print("h1 = HTTP/1.1 keep-alive, one request in flight per connection; h2c = HTTP/2 with prior\n"
              "knowledge on the cleartext port; latency = h2load's time per request (request sent to\n"
              "response complete), percentiles over every 2xx request of the run.")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        return 0 if all(r.get("2xx") == args.requests for m in modes for r in results[m].values()) else 1
    finally:
        for proc in reversed(procs):
            stop(proc)
        if args.keep_tmp:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
