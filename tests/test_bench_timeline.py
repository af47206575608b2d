"""The burst scenario's timeline (bench/run.py): how busy the target's CPU was
(``procs.BusyMeter``) between the first request sent and the last first byte, and the first
bytes by decile of send order (``loadgen.timeline_summary``)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from loadgen import timeline_summary  # noqa: E402
from procs import BusyMeter, run_ns  # noqa: E402

READY = "import time\nprint('ready', flush=True)\n"  # metered after this: not its start-up
SPIN = READY + "end = time.monotonic() + 20\nwhile time.monotonic() < end: pass\n"
SLEEP = READY + "time.sleep(20)\n"


def _metered(code: str) -> float:
    """How many cores' worth a child running ``code`` used over 20+ of the meter's samples."""
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        meter = BusyMeter([child.pid], every=0.005)
        meter.start()
        deadline = time.monotonic() + 10
        while len(meter.samples) < 25 and time.monotonic() < deadline:
            meter.join(0.01)  # waits on the sampler itself, bounded
        meter.stop()
        samples = meter.samples
        assert len(samples) >= 25
        busy = meter.busy(samples[2][0], samples[-2][0])
        assert busy is not None
        return busy
    finally:
        child.kill()
        child.wait()


def test_a_spinning_process_is_busy_and_a_sleeping_one_is_not():
    spinning, sleeping = _metered(SPIN), _metered(SLEEP)
    assert sleeping < 0.1
    assert spinning > sleeping + 0.2
    assert spinning < 1.1  # one thread: at most one core (the samples' own skew aside)


def test_run_ns_counts_every_thread_and_skips_the_gone():
    assert run_ns([]) is None
    own = run_ns([os.getpid()])
    assert own is not None and own > 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert run_ns([gone.pid]) is None


def test_busy_needs_samples_on_both_sides_of_the_window():
    meter = BusyMeter([])
    meter.samples = [(1.0, 0), (2.0, 500_000_000), (3.0, 1_500_000_000)]
    assert meter.busy(1.0, 3.0) == 0.75
    assert meter.busy(2.0, 3.0) == 1.0
    assert meter.busy(0.5, 3.0) is None  # nothing sampled before the window
    assert meter.busy(1.0, 3.5) is None  # ... or after it


def test_first_bytes_by_decile_of_send_order():
    # 20 requests sent 1 ms apart; the first bytes come back in reverse order of sending
    timeline = [(10.0 + k / 1000, 10.5 - k / 1000) for k in range(20)]
    summary = timeline_summary(list(reversed(timeline)))
    assert summary["first_sent"] == 10.0
    assert summary["last_first_byte"] == 10.5
    deciles = summary["first_byte_ms_by_decile"]
    assert len(deciles) == 10
    assert deciles[0] == round(((10.5 + 10.499) / 2 - 10.0) * 1000, 2)  # sent first, answered last
    assert deciles == sorted(deciles, reverse=True)
    assert timeline_summary([]) == {}


def test_cpu_per_stream_is_the_windows_busy_time_shared_by_its_streams():
    from scenarios import per_stream_us

    # 0.8 of a core over 0.2 s, 1000 streams: 160 us each
    assert per_stream_us(0.8, 10.0, 10.2, 1000) == 160.0
    assert per_stream_us(None, 10.0, 10.2, 1000) is None  # the meter saw no window
    assert per_stream_us(0.8, None, 10.2, 1000) is None  # no timeline
    assert per_stream_us(0.8, 10.0, 10.2, 0) is None  # no burst


def test_the_table_shows_both_bursts_cost_per_stream():
    from table import ROWS, metrics

    class Target:
        idle_rss_kib = peak_rss_kib = start_s = None
        scenarios = {
            "burst": {"ttfb_ms": {"p50": 80.0}, "cpu_us_per_stream": 160.0},
            "burst_again": {"ttfb_ms": {"p50": 60.0}, "cpu_us_per_stream": 80.0},
        }

    figures = metrics(Target())
    assert figures["burst_cpu_us"] == 160.0
    assert figures["burst_again_ttfb_p50_ms"] == 60.0
    assert figures["burst_again_cpu_us"] == 80.0
    assert {"burst_cpu_us", "burst_again_ttfb_p50_ms", "burst_again_cpu_us"} <= {k for k, *_ in ROWS}
