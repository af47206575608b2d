"""One command, one table: the mock provider direct vs nginx vs a minimal Python relay vs Kraken.

Everything runs on 127.0.0.1 as child processes of this script (the mock, nginx, Kraken, and
bench/loadgen.py once per scenario, so load generation never shares the targets' CPU accounting).
Every load run is bounded in requests and seconds; every child is stopped by PID at the end.

    .venv/bin/python bench/run.py                      # all targets, modest defaults (< 2 min on 2 cores)
    .venv/bin/python bench/run.py --targets direct,nginx --json out.json

The burst scenario opens --burst (1000) streams at once, --burst-chunk-delay-ms (50) apart per
chunk, against Kraken's DEFAULT config but ``trusted_proxies = ["127.0.0.1"]`` (the load client
stands where a production load balancer would): TTFB p50, failed streams, RSS growth per stream,
and how busy the target was from the first request sent to the last first byte (1.0: one core
all along, its own work sets the TTFB). The progress line adds the first bytes by decile of send
order: a steady rise is first come, first served; a flat start, then a jump, is work batched.
The same burst runs once more right after (``--no-burst-again`` skips it), when the connections
each target kept to the mock spare it most dials; both report CPU µs per stream to the last first byte.
The hold scenario keeps --hold (1000) streams of --hold-chunks (200) chunks open at once, the mock
pacing them --hold-chunk-delay-ms (50) apart, and reads the target's CPU seconds over it. Start-up
is timed from spawning a target to its first answered 200 (the probe retried every 5 ms).

As the issue's figures were measured, each proxy runs pinned alone on the first core, and the
mock, the load client and this script on the others (``--no-pin``: all share every core).
"""
from __future__ import annotations

import argparse
import compileall
import http.client
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
def conversation(kib: float) -> dict:
    """A chat request of about ``kib`` KiB, as an assistant's long history sends: a system
    prompt, alternating turns of prose, and a last question (the same bytes every run)."""
    messages = [{"role": "system", "content": "You are a helpful assistant for our customers."}]
    size = len(json.dumps(messages))
    while size < kib * 1024:
        turn = len(messages)
        text = f"Turn {turn}: " + "the quick brown fox jumps over the lazy dog, again. " * 8
        messages.append({"role": "assistant" if turn % 2 == 0 else "user", "content": text})
        size += len(text) + 40
    messages.append({"role": "user", "content": "Summarise the discussion in three points."})
    return {"model": "mock-gpt", "messages": messages}

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
TARGETS = ("direct", "nginx", "pyfloor", "kraken")
PROXIES = TARGETS[1:]

from procs import (CLK_TCK, BusyMeter, PeakRss, cpu_seconds, free_port,  # noqa: E402,F401
                   interpreter, memory_kib, pin_driver, process_tree, start, stop, tail,
                   wait_port)
from load import AUTH, BODY, DEMO_KEY, PATH, run_load  # noqa: E402,F401 (other scripts' names)
from rounds import interleaved, per_round_ratios, ratio_line  # noqa: E402
from scenarios import SCENARIOS, burst, cpu_round, hold, per_stream_us, scenario, warm  # noqa: E402,F401
from table import ROUND_ROWS, report  # noqa: E402


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen
    log: Path
    idle_rss_kib: int = 0
    peak_rss_kib: int = 0
    start_s: float | None = None  # spawn to first answered 200 (median of the timed spawns)
    start_runs: list = field(default_factory=list)
    scenarios: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)


def probe(port: int, timeout: float = 10.0) -> tuple[int, bytes]:
    """One non-stream request, to check a target answers before loading it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", PATH, json.dumps(BODY), {
            "Content-Type": "application/json", "Authorization": f"Bearer {DEMO_KEY}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as e:
        return 0, str(e).encode()
    finally:
        conn.close()


def wait_answer(port: int, proc: subprocess.Popen, spawned: float, seconds: float) -> float | None:
    """Seconds from ``spawned`` (perf_counter) to the first 200 from the target; None if the process
    died or ``seconds`` passed without one."""
    deadline = spawned + seconds
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            return None
        status, _ = probe(port, timeout=1.0)
        if status == 200:
            return time.perf_counter() - spawned
        time.sleep(0.005)
    return None


def find_nginx() -> str | None:
    return next((p for p in NGINX_CANDIDATES if os.access(p, os.X_OK)), None) or shutil.which("nginx")


def nginx_config(tmp: Path, port: int, mock_port: int) -> Path:
    text = (BENCH / "nginx.conf.template").read_text()
    text = text.replace("@DIR@", str(tmp)).replace("@PORT@", str(port))
    text = text.replace("@MOCK_PORT@", str(mock_port))
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


def kraken_config(tmp: Path, port: int, mock_port: int) -> Path:
    conf = tmp / "kraken.toml"
    conf.write_text(f"""[server]
host = "127.0.0.1"
port = {port}

[store]
path = "{tmp / 'bench.db'}"

[providers.bench]
kind = "openai_compatible"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key = "sk-bench"
models = ["mock-gpt"]

[limits]
# The load client stands in for a load balancer: everything else is Kraken's default.
trusted_proxies = ["127.0.0.1"]
""")
    return conf


def proxy_cmd(name: str, tmp: Path, mock_port: int, nginx: str | None, args) -> tuple[list[str], int, Path]:
    """The command starting nginx, the Python floor or Kraken on a fresh free port, its port and
    its log file."""
    port = free_port()
    if name == "pyfloor":
        return ([args.python, str(BENCH / "pyfloor.py"), "--port", str(port), "--upstream-port",
                 str(mock_port), "--work-us", str(args.pyfloor_work_us)], port, tmp / "pyfloor.log")
    if name == "nginx":
        conf = nginx_config(tmp, port, mock_port)
        return ([nginx, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf),
                 "-g", "daemon off;"], port, tmp / "nginx.log")
    conf = kraken_config(tmp, port, mock_port)
    return ([a.format(python=args.python, config=conf) for a in shlex.split(args.kraken_cmd)],
            port, tmp / "kraken.log")


def time_start(cmd: list[str], port: int, log: Path, cwd: Path, seconds: float,
               cores: set[int] | None = None) -> float | None:
    """Spawn, wait for the first 200, stop: seconds from spawn to that answer (None: never)."""
    spawned = time.perf_counter()
    proc = start(cmd, log, cwd, cores)
    try:
        return wait_answer(port, proc, spawned, seconds)
    finally:
        stop(proc)


# ----------------------------------------------------------------------------- load


def first_burst(name: str, n: int, tmp: Path, mock_port: int, nginx: str | None,
                args) -> float | None:
    """Round ``n`` of ``--burst-rounds``: a fresh ``name`` process, warmed as ``measure`` warms
    its target, and its first burst's TTFB p50 (None: it did not start or serve)."""
    work = tmp / f"round{n}-{name}"
    work.mkdir()
    cmd, port, log = proxy_cmd(name, work, mock_port, nginx, args)
    proc = start(cmd, log, work, args.cores)
    try:
        if not wait_port(port, proc, args.start_seconds):
            return None
        target = Target(name, port, proc, log)
        warm(target, args)
        return (burst(target, args).get("ttfb_ms") or {}).get("p50")
    finally:
        stop(proc)


def measure(target: Target, mock: Target, args) -> None:
    """Warm up, then run each scenario with the target's CPU time read around it."""
    warm(target, args)
    if args.burst:  # first, so earlier scenarios' heap growth does not hide its memory
        result = target.scenarios["burst"] = burst(target, args)
        deciles = " ".join(f"{ms:.0f}" for ms in result.get("first_byte_ms_by_decile", []))
        print(f"  {target.name:7} {'burst':14} {result.get('completed', 0):6} req "
              f"TTFB p50 {(result.get('ttfb_ms') or {}).get('p50')} ms  failed {result['failed']}  "
              f"{result['kib_per_stream']} KiB/stream  busy {result['busy_to_last_first_byte']}  "
              f"first bytes by send decile (ms after the first send): {deciles}", flush=True)
        if args.burst_again:  # the same burst once more: the provider connections are kept
            again = target.scenarios["burst_again"] = burst(target, args)
            print(f"  {target.name:7} {'burst again':14} {again.get('completed', 0):6} req "
                  f"TTFB p50 {(again.get('ttfb_ms') or {}).get('p50')} ms  "
                  f"failed {again['failed']}  CPU {again['cpu_us_per_stream']} us/stream", flush=True)
    if args.hold:
        result = target.scenarios["hold"] = hold(target, mock, args)
        print(f"  {target.name:7} {'hold':14} {result.get('completed', 0):6} req "
              f"CPU {result['cpu_s']} s  failed {result['failed']}", flush=True)
    for name, stream, conc, attr in SCENARIOS:
        result = target.scenarios[name] = scenario(target, mock, stream, conc, getattr(args, attr), args)
        print(f"  {target.name:7} {name:14} {result.get('completed', 0):6} req "
              f"{result.get('rps') or 0:9.1f} req/s  errors {result.get('errors')}", flush=True)
    if args.big_body_kib:  # what a long history costs: parsed, checked, classified, re-encoded
        pids, body = target.pids(), conversation(args.big_body_kib)
        run_load(target.url, False, 32, args.warmup, args.max_seconds / 2, body=body)
        cpu0 = cpu_seconds(pids)
        result = run_load(target.url, False, 32, args.nonstream_big, args.max_seconds, body=body)
        result["cpu_s"] = round(cpu_seconds(pids) - cpu0, 3)
        target.scenarios["nonstream_big_c32"] = result
        print(f"  {target.name:7} {'big body':14} {result.get('completed', 0):6} req "
              f"{result.get('rps') or 0:9.1f} req/s  errors {result.get('errors')}", flush=True)
    target.peak_rss_kib = memory_kib(target.pids(), "VmHWM")


# ----------------------------------------------------------------------------- main


def cpu_rounds(targets: dict[str, Target], mock: Target, args) -> None:
    """The CPU rows (the hold's too) and the c=1 row again, ``--cpu-rounds`` times on every target
    interleaved (direct too, the c=1 row's base): each row's median and, per round, Kraken's
    ratio to nginx."""
    names = [n for n in TARGETS if n in targets]
    print(f"cpu rounds: {args.cpu_rounds}, the running targets, interleaved", flush=True)
    seen = interleaved(names, args.cpu_rounds, lambda name, n: cpu_round(targets[name], mock, args))
    for name in names:
        targets[name].scenarios["cpu_rounds"] = {"rounds": seen[name]}
    for key in ROUND_ROWS:
        for name in names:
            if name in ("direct", "nginx"):
                continue
            mine, floor = [r[key] for r in seen[name]], [r[key] for r in seen["nginx"]]
            if not key.startswith("stream_c1"):
                print(f"  {key}: " + ratio_line(name, per_round_ratios(mine, floor)), flush=True)
            else:  # the c=1 row's target is ms added over nginx's
                added = [m - f for m, f in zip(mine, floor) if m is not None and f is not None]
                print(f"  {key}: {name} - nginx per round "
                      + " / ".join(f"{a:+.3f}" for a in added)
                      + (f"; median {statistics.median(added):+.3f} ms" if added else ""), flush=True)


def spawn_proxies(proxies: list[str], starts: dict[str, list], tmp: Path, nginx: str | None,
                  args, procs: list, targets: dict[str, "Target"], notes: list[str]) -> None:
    """Time ``--start-runs`` spawns of each proxy alone, then start the measured ones."""
    mock = targets["direct"]
    for name in proxies:  # separate spawns, timed alone, before the measured processes
        starts[name] = [time_start(*proxy_cmd(name, tmp, mock.port, nginx, args), tmp,
                                   args.start_seconds, args.cores) for _ in range(args.start_runs)]
    for name in proxies:
        cmd, port, log = proxy_cmd(name, tmp, mock.port, nginx, args)
        proc = start(cmd, log, tmp, args.cores)
        procs.append(proc)
        if wait_port(port, proc, args.start_seconds):
            targets[name] = Target(name, port, proc, log)
        else:
            notes.append(f"{name}: did not start, column skipped:\n{tail(log)}")
    for name, times in starts.items():
        if name in targets:
            ok = sorted(x for x in times if x is not None)
            targets[name].start_s = ok[len(ok) // 2] if ok else None
            targets[name].start_runs = times


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The options, and the targets to measure (``direct`` always first)."""
    ap = argparse.ArgumentParser(description="Kraken vs nginx vs direct, through the mock provider.")
    ap.add_argument("--targets", default="direct,nginx,kraken",
                    help="comma list of direct,nginx,pyfloor,kraken (direct is always measured; "
                         "pyfloor: bench/pyfloor.py, the least a Python relay does)")
    ap.add_argument("--stream1", type=int, default=500, help="streamed requests at concurrency 1")
    ap.add_argument("--stream32", type=int, default=3000, help="streamed requests at concurrency 32")
    ap.add_argument("--nonstream", type=int, default=5000, help="non-stream requests at concurrency 32")
    ap.add_argument("--big-body-kib", type=float, default=32.0,
                    help="body size of the long-conversation scenario (non-stream, c=32; 0 skips)")
    ap.add_argument("--nonstream-big", type=int, default=2000,
                    help="non-stream requests with the long conversation at concurrency 32")
    ap.add_argument("--warmup", type=int, default=300, help="unmeasured requests per target and mode")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="cap per scenario")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed response")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="mock delay between chunks")
    ap.add_argument("--burst", type=int, default=1000,
                    help="streams opened at once in the burst scenario (0 = skip it)")
    ap.add_argument("--burst-chunk-delay-ms", type=float, default=50.0,
                    help="mock delay between chunks in the burst scenario (sent per request)")
    ap.add_argument("--burst-seconds", type=float, default=60.0, help="burst scenario time cap")
    ap.add_argument("--burst-again", action=argparse.BooleanOptionalAction, default=True,
                    help="run the burst a second time right after the first: connections a "
                         "target kept to the provider (Kraken's pool keeps all for its idle "
                         "timeout, nginx 128) now spare it the dials")
    ap.add_argument("--burst-rounds", type=int, default=5,
                    help="the burst once more on fresh processes this many times, nginx and "
                         "the others interleaved: the row's median (bench/rounds.py; 0 skips)")
    ap.add_argument("--cpu-rounds", type=int, default=3,
                    help="the CPU rows (the hold's too) and the c=1 row again this many times, "
                         "all targets interleaved, at the end: each row's median (0 skips)")
    ap.add_argument("--hold", type=int, default=1000,
                    help="streams held open at once in the hold scenario (0 = skip it)")
    ap.add_argument("--hold-chunks", type=int, default=200, help="chunks per stream in the hold scenario")
    ap.add_argument("--hold-chunk-delay-ms", type=float, default=50.0,
                    help="mock delay between chunks in the hold scenario (sent per request)")
    ap.add_argument("--hold-seconds", type=float, default=60.0, help="hold scenario time cap")
    ap.add_argument("--kraken-cmd", default="{python} -m kraken serve --demo --config {config}",
                    help="command starting Kraken ({python} and {config} are filled in)")
    ap.add_argument("--pyfloor-work-us", type=float, default=0.0,
                    help="CPU µs pyfloor spends on each request before forwarding it (a "
                         "gateway's per-request work, for sizing the burst row; default 0)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter running Kraken and pyfloor (default: this one); its "
                         "environment needs Kraken's dependencies (the checkout comes first "
                         "on its path)")
    ap.add_argument("--start-seconds", type=float, default=30.0, help="wait this long for a target")
    ap.add_argument("--start-runs", type=int, default=3,
                    help="timed spawns (to first answered request) per proxy before the measured one")
    ap.add_argument("--no-compile", action="store_true",
                    help="do not compile Kraken's sources to bytecode first (pip install does)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin: by default each measured proxy runs alone on the first "
                         "core, the mock and the load client on the others")
    ap.add_argument("--json", metavar="FILE", help="also write all raw results as JSON")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    args = ap.parse_args(argv)
    wanted = ["direct", *[t for t in args.targets.split(",") if t in TARGETS and t != "direct"]]
    unknown = [t for t in args.targets.split(",") if t and t not in TARGETS]
    if unknown:
        ap.error(f"unknown targets: {', '.join(unknown)}")
    return args, wanted


def main(argv: list[str] | None = None) -> int:
    args, wanted = parse_args(argv)
    args.cores = pin_driver(not args.no_pin)
    tmp = Path(tempfile.mkdtemp(prefix="kraken-bench-"))
    procs: list[subprocess.Popen] = []
    notes: list[str] = []
    if not args.no_compile:  # as installed: an editable checkout run with PYTHONDONTWRITEBYTECODE
        compileall.compile_dir(str(REPO / "kraken"), quiet=1)  # would compile at every start
    targets: dict[str, Target] = {}
    try:
        # -- start everything first, so idle RSS is read before any load
        port = free_port()
        spawned = time.perf_counter()
        proc = start([sys.executable, "-m", "kraken.mock", "--host", "127.0.0.1", "--port", str(port),
                      "--chunks", str(args.chunks), "--chunk-delay-ms", str(args.chunk_delay_ms)],
                     tmp / "mock.log", tmp)
        procs.append(proc)
        mock_start = wait_answer(port, proc, spawned, args.start_seconds)
        if mock_start is None:
            print(f"mock provider did not start:\n{tail(tmp / 'mock.log')}", file=sys.stderr)
            return 2
        mock = targets["direct"] = Target("direct", port, proc, tmp / "mock.log")

        nginx = find_nginx() if "nginx" in wanted else None
        if "nginx" in wanted and nginx is None:
            notes.append("nginx: not installed (no /usr/sbin/nginx), column skipped")
        proxies = [n for n in PROXIES if n in wanted and (n != "nginx" or nginx)]
        spawn_proxies(proxies, {"direct": [mock_start]}, tmp, nginx, args, procs, targets, notes)

        time.sleep(1.0)  # settle before reading idle memory
        for t in list(targets.values()):
            t.idle_rss_kib = memory_kib(t.pids(), "VmRSS")
            status, body = probe(t.port)
            if status != 200:
                notes.append(f"{t.name}: probe answered {status} {body[:300]!r}, column skipped"
                             + (f"\n{tail(t.log)}" if t.name == "kraken" else ""))
                if t.name == "direct":
                    print("\n".join(notes), file=sys.stderr)
                    return 2
                del targets[t.name]

        print(f"burst: {args.burst} streams at once, {args.burst_chunk_delay_ms:g} ms between "
              f"chunks (Kraken: default config, the load client as a trusted proxy)", flush=True)
        print(f"hold: {args.hold} streams x {args.hold_chunks} chunks at once, "
              f"{args.hold_chunk_delay_ms:g} ms between chunks", flush=True)
        args.interpreter = interpreter(args.python)  # in --json's args too
        print(f"python: {args.interpreter}", flush=True)
        print("cores: " + ("not pinned" if args.cores is None else
                           f"each proxy on {sorted(args.cores)}, mock and load client on "
                           f"{sorted(os.sched_getaffinity(0))}"), flush=True)
        print(f"load: {args.stream1} streamed @1, {args.stream32} streamed @32, {args.nonstream} "
              f"non-stream @32, <= {args.max_seconds:g} s each; {args.chunks} chunks/stream, "
              f"{args.chunk_delay_ms:g} ms between chunks; long body: {args.nonstream_big} "
              f"non-stream @32 with a {args.big_body_kib:g} KiB conversation", flush=True)
        for t in targets.values():
            measure(t, mock, args)
        if args.burst and args.burst_rounds and "nginx" in targets:
            names = [n for n in PROXIES if n in targets]
            print(f"burst rounds: {args.burst_rounds}, fresh processes, interleaved", flush=True)
            seen = interleaved(names, args.burst_rounds, lambda name, n: first_burst(
                name, n, tmp, mock.port, nginx, args))
            for name in names:
                targets[name].scenarios["burst_rounds"] = {"ttfb_p50_ms": seen[name]}
                if name != "nginx":
                    print("  " + ratio_line(name, per_round_ratios(seen[name], seen["nginx"])))

        if args.cpu_rounds and "nginx" in targets:
            cpu_rounds(targets, mock, args)
        report(targets, notes, args)
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc)
        if args.keep_tmp:
            print(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
