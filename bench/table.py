"""bench/run.py's table: the figures of each target, and their rendering against direct and nginx."""
from __future__ import annotations

import json
from pathlib import Path

from rounds import median_or_none


def metrics(t) -> dict:
    """The table's figures for one target (None where a scenario produced nothing)."""
    s = t.scenarios

    def pct(name: str, kind: str, q: str):
        return (s.get(name, {}).get(kind) or {}).get(q)

    ns, b, h = s.get("nonstream_c32", {}), s.get("burst", {}), s.get("hold", {})
    again = s.get("burst_again", {})

    def cpu_ms(name: str):
        r = s.get(name, {})
        return (r["cpu_s"] * 1000 / r["completed"]) if r.get("completed") else None

    rounds = s.get("cpu_rounds", {}).get("rounds") or []

    def median_of_rounds(key: str):
        return median_or_none([r.get(key) for r in rounds])

    return {
        "cpu_ms_nonstream_c32": cpu_ms("nonstream_c32"),
        "rounds_cpu_ms_nonstream_c32": median_of_rounds("cpu_ms_nonstream_c32"),
        "rounds_cpu_ms_stream_c32": median_of_rounds("cpu_ms_stream_c32"),
        "rounds_stream_c1_ttfb_p50_ms": median_of_rounds("stream_c1_ttfb_p50_ms"),
        "rounds_hold_cpu_s": median_of_rounds("hold_cpu_s"),
        "cpu_ms_stream_c32": cpu_ms("stream_c32"),
        "stream_c1_ttfb_p50_ms": pct("stream_c1", "ttfb_ms", "p50"),
        "burst_ttfb_p50_ms": pct("burst", "ttfb_ms", "p50"),
        "burst_rounds_ttfb_p50_ms": median_or_none(
            s.get("burst_rounds", {}).get("ttfb_p50_ms") or []),
        "burst_kib_per_stream": b.get("kib_per_stream"),
        "hold_cpu_s": h.get("cpu_s") if h.get("completed") else None,
        "idle_rss_mib": t.idle_rss_kib / 1024 if t.idle_rss_kib else None,
        "start_s": t.start_s,
        "burst_failed": b.get("failed"),
        "burst_busy": b.get("busy_to_last_first_byte"),
        "burst_cpu_us": b.get("cpu_us_per_stream"),
        "burst_again_ttfb_p50_ms": pct("burst_again", "ttfb_ms", "p50"),
        "burst_again_cpu_us": again.get("cpu_us_per_stream"),
        "hold_failed": h.get("failed"),
        "cpu_ms_stream_c1": cpu_ms("stream_c1"),
        "stream_c1_ttfb_p99_ms": pct("stream_c1", "ttfb_ms", "p99"),
        "stream_c1_total_p50_ms": pct("stream_c1", "total_ms", "p50"),
        "stream_c32_ttfb_p50_ms": pct("stream_c32", "ttfb_ms", "p50"),
        "stream_c32_ttfb_p99_ms": pct("stream_c32", "ttfb_ms", "p99"),
        "stream_c32_total_p50_ms": pct("stream_c32", "total_ms", "p50"),
        "nonstream_c32_rps": ns.get("rps"),
        "cpu_ms_nonstream_big": cpu_ms("nonstream_big_c32"),
        "peak_rss_mib": t.peak_rss_kib / 1024 if t.peak_rss_kib else None,
    }


# key, label, how to compare: "diff" (ms added), "ratio" or "raw". The first block is issue 13's
# table, in its order; the rest are the other figures of the same run.
ISSUE_ROWS = (
    ("cpu_ms_nonstream_c32", "CPU ms / non-stream req, c=32", "ratio"),
    ("rounds_cpu_ms_nonstream_c32", "  the same, median of --cpu-rounds", "ratio"),
    ("cpu_ms_stream_c32", "CPU ms / streamed req, c=32", "ratio"),
    ("rounds_cpu_ms_stream_c32", "  the same, median of --cpu-rounds", "ratio"),
    ("stream_c1_ttfb_p50_ms", "stream c=1 TTFB p50 ms", "diff"),
    ("rounds_stream_c1_ttfb_p50_ms", "  the same, median of --cpu-rounds", "diff"),
    ("burst_ttfb_p50_ms", "burst: N streams at once, TTFB p50 ms", "diff"),
    ("burst_rounds_ttfb_p50_ms", "  the same, median of --burst-rounds", "diff"),
    ("burst_kib_per_stream", "burst: KiB RSS per open stream", "ratio"),
    ("hold_cpu_s", "hold: N streams x M chunks, CPU s", "ratio"),
    ("rounds_hold_cpu_s", "  the same, median of --cpu-rounds", "ratio"),
    ("idle_rss_mib", "idle RSS MiB (after start)", "ratio"),
    ("start_s", "start to first answered request s", "ratio"),
)
OTHER_ROWS = (
    ("burst_failed", "burst: failed streams", "raw"),
    ("burst_busy", "burst: CPU busy, 1st send to last 1st byte", "raw"),
    ("burst_cpu_us", "burst: CPU us per stream to last 1st byte", "ratio"),
    ("burst_again_ttfb_p50_ms", "burst again (provider conns kept), TTFB p50", "diff"),
    ("burst_again_cpu_us", "burst again: CPU us per stream", "ratio"),
    ("hold_failed", "hold: failed streams", "raw"),
    ("cpu_ms_stream_c1", "CPU ms / streamed req, c=1", "ratio"),
    ("stream_c1_ttfb_p99_ms", "stream c=1   TTFB p99 ms", "diff"),
    ("stream_c1_total_p50_ms", "stream c=1   total p50 ms", "diff"),
    ("stream_c32_ttfb_p50_ms", "stream c=32  TTFB p50 ms", "diff"),
    ("stream_c32_ttfb_p99_ms", "stream c=32  TTFB p99 ms", "diff"),
    ("stream_c32_total_p50_ms", "stream c=32  total p50 ms", "diff"),
    ("nonstream_c32_rps", "non-stream c=32 req/s", "ratio"),
    ("cpu_ms_nonstream_big", "CPU ms / non-stream req, long body", "ratio"),
    ("peak_rss_mib", "peak RSS MiB (VmHWM)", "ratio"),
)
ROWS = ISSUE_ROWS + OTHER_ROWS
ROUND_ROWS = ("cpu_ms_nonstream_c32", "cpu_ms_stream_c32", "stream_c1_ttfb_p50_ms", "hold_cpu_s")
"""What each of run.py's ``--cpu-rounds`` measures again (``cpu_round``)."""


def number(value) -> str:
    return (str(value) if isinstance(value, int) else f"{value:.0f}" if abs(value) >= 1000
            else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}")


def compare(value, base, how: str) -> str:
    """``value`` against ``base``: ms added and ratio for "diff" rows, ratio for "ratio" rows."""
    if value is None or base is None or how == "raw":
        return ""
    ratio = f"x{value / base:.2f}" if base else ""
    return f"{value - base:+.3f} {ratio}".strip() if how == "diff" else ratio


def fmt(value, base, how: str, is_base: bool) -> str:
    if value is None:
        return "-"
    vs = "" if is_base else compare(value, base, how)
    return f"{number(value)} ({vs})" if vs else number(value)


def render(figures: dict[str, dict]) -> str:
    """Columns: each target (with its comparison to direct), then every non-nginx target against
    nginx (the floor a mature C proxy sets on the same machine)."""
    names = list(figures)
    base, floor = figures.get("direct", {}), figures.get("nginx")
    others = [n for n in names if n not in ("direct", "nginx")] if floor else []
    rows = [["metric", *names, *(f"{n} vs nginx" for n in others)]]
    for i, (key, label, how) in enumerate(ROWS):
        if i == len(ISSUE_ROWS):
            rows.append(None)
        rows.append([label, *(fmt(figures[n][key], base.get(key), how, n == "direct") for n in names),
                     *(compare(figures[n][key], floor[key], how) or "-" for n in others)])
    widths = [max(len(r[i]) for r in rows if r) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             if r else "" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def report(targets: dict, notes: list[str], args) -> None:
    """The table, the notes on failed requests, and with ``--json`` every raw figure."""
    figures = {name: metrics(t) for name, t in targets.items()}
    for t in targets.values():
        for name, r in t.scenarios.items():
            if r.get("errors") or r.get("connect_errors") or r.get("bad_stream") or r.get("timed_out"):
                notes.append(f"{t.name} {name}: {r.get('completed', 0)}/{r.get('requested')} done, "
                             f"{r.get('errors')} errors, {r.get('connect_errors', 0)} failed "
                             f"connects, {r.get('bad_stream', 0)} streams without "
                             f"[DONE], stopped by time cap: {r.get('timed_out')} {r.get('error', '')}")
    print()
    print(render(figures))
    print("\n(x) = ratio to direct, (+) = ms added over direct; 'vs nginx' columns: the same "
          "against nginx. CPU and RSS are the target's own processes (direct = the mock itself); "
          "start = spawn to first 200, median of --start-runs spawns.")
    for note in notes:
        print("note:", note)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": {**vars(args), "cores": args.cores and sorted(args.cores)}, "figures": figures, "notes": notes,
            "targets": {n: {"idle_rss_kib": t.idle_rss_kib, "peak_rss_kib": t.peak_rss_kib,
                            "start_s": t.start_runs,
                            "scenarios": t.scenarios} for n, t in targets.items()},
        }, indent=2))
