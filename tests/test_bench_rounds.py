"""Interleaved rounds (bench/rounds.py), as bench/run.py's ``--burst-rounds`` and bench/ab.py
run them: the order reversed every other round, and figures read against nginx's round by round."""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from rounds import (interleaved, median_interval, median_or_none, per_round_ratios,  # noqa: E402
                    ratio_line)


def test_each_round_runs_every_target_once_in_an_order_rotated_every_round():
    ran: list[tuple[str, int]] = []

    def one(name: str, n: int) -> float:
        ran.append((name, n))
        return {"nginx": 50.0, "kraken": 60.0}[name] + n

    figures = interleaved(["nginx", "kraken"], 3, one)
    assert ran == [("nginx", 0), ("kraken", 0), ("kraken", 1), ("nginx", 1),
                   ("nginx", 2), ("kraken", 2)]
    assert figures == {"nginx": [50.0, 51.0, 52.0], "kraken": [60.0, 61.0, 62.0]}
    ran.clear()  # three: each in each place once every three rounds (B is not always second)
    interleaved(["A", "B", "nginx"], 3, lambda name, n: ran.append((name, n)) or 1.0)
    orders = [[name for name, m in ran if m == n] for n in range(3)]
    assert orders == [["A", "B", "nginx"], ["B", "nginx", "A"], ["nginx", "A", "B"]]


def test_ratios_pair_each_round_with_the_base_of_the_same_round_and_skip_failed_ones():
    assert per_round_ratios([60.0, 66.0, 90.0], [50.0, 60.0, 60.0]) == [1.2, 1.1, 1.5]
    # a target that did not start (None), or a base with no figure, leave their round out
    assert per_round_ratios([60.0, None, 90.0], [50.0, 60.0, None]) == [1.2]
    assert median_or_none([3.0, None, 1.0, 2.0]) == 2.0
    assert median_or_none([None]) is None


def test_the_ratio_line_gives_every_round_and_their_median():
    assert ratio_line("kraken", [1.31, 1.12, 1.19]) == (
        "kraken: x nginx per round 1.31 / 1.12 / 1.19; median x1.19")
    assert ratio_line("kraken", []) == "kraken: no round with both kraken and nginx"
    line = ratio_line("kraken", [1.31, 1.12, 1.19, 1.05, 1.25])
    assert line.startswith(
        "kraken: x nginx per round 1.31 / 1.12 / 1.19 / 1.05 / 1.25; median x1.19 (90% interval")
    low, high = median_interval([1.31, 1.12, 1.19, 1.05, 1.25])
    assert line.endswith(f"(90% interval x{low:.2f}-x{high:.2f})")


def test_the_median_interval_says_how_far_another_run_of_the_rounds_could_read():
    assert median_interval([1.1, 1.2, 1.3, 1.4]) is None  # too few rounds to resample
    assert median_interval([1.1] * 30) == (1.1, 1.1)      # no spread, no doubt
    # thirty rounds spread around x1.1: the interval holds the median and lies within the
    # rounds, and the same rounds always read the same interval (seeded)
    spread = [0.8 + 0.6 * ((7 * n) % 30) / 29 for n in range(30)]
    low, high = median_interval(spread)
    assert min(spread) < low < statistics.median(spread) < high < max(spread)
    assert median_interval(spread) == (low, high)
    # more rounds of the same spread pin the median down: a narrower interval
    low4, high4 = median_interval(spread * 4)
    assert high4 - low4 < high - low
    # a row clearly below its line reads so: every round under x1.2 -> the interval too
    assert median_interval([0.9 + 0.01 * n for n in range(20)])[1] < 1.2


def test_the_table_has_the_rounds_median_under_the_burst_row():
    from table import ROWS, metrics

    class Target:
        idle_rss_kib = peak_rss_kib = start_s = None
        scenarios = {"burst": {"ttfb_ms": {"p50": 80.0}},
                     "burst_rounds": {"ttfb_p50_ms": [70.0, None, 64.0, 66.0]}}

    assert metrics(Target())["burst_rounds_ttfb_p50_ms"] == 66.0
    keys = [key for key, *_ in ROWS]
    assert keys.index("burst_rounds_ttfb_p50_ms") == keys.index("burst_ttfb_p50_ms") + 1


def test_the_table_has_the_cpu_rounds_medians_under_their_rows():
    from table import ROUND_ROWS, ROWS, metrics

    class Target:
        idle_rss_kib = peak_rss_kib = start_s = None
        scenarios = {"nonstream_c32": {"cpu_s": 0.5, "completed": 5000},
                     "cpu_rounds": {"rounds": [
                         {"cpu_ms_nonstream_c32": 0.12, "cpu_ms_stream_c32": 0.2,
                          "stream_c1_ttfb_p50_ms": 0.9, "hold_cpu_s": 4.0},
                         {"cpu_ms_nonstream_c32": 0.09, "cpu_ms_stream_c32": None,
                          "stream_c1_ttfb_p50_ms": 0.7, "hold_cpu_s": 3.5},
                         {"cpu_ms_nonstream_c32": 0.1, "cpu_ms_stream_c32": 0.16,
                          "stream_c1_ttfb_p50_ms": 0.8}]}}

    figures = metrics(Target())
    assert figures["cpu_ms_nonstream_c32"] == 0.1            # the first measurement
    assert figures["rounds_cpu_ms_nonstream_c32"] == 0.1     # the rounds' median
    assert figures["rounds_cpu_ms_stream_c32"] == 0.18       # a failed round left out
    assert figures["rounds_stream_c1_ttfb_p50_ms"] == 0.8
    assert figures["rounds_hold_cpu_s"] == 3.75                # rounds without a hold left out
    keys = [key for key, *_ in ROWS]
    assert set(ROUND_ROWS) == {"cpu_ms_nonstream_c32", "cpu_ms_stream_c32",
                               "stream_c1_ttfb_p50_ms", "hold_cpu_s"}
    for key in ROUND_ROWS:
        assert keys.index("rounds_" + key) == keys.index(key) + 1
