"""bench/chunk_cost.py still runs against the relay it measures: its in-memory transports must
keep up with what the connections ask of a transport (it broke once, unnoticed, when the
provider connection began handing its transport to the C pipe)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_mode_prints_its_figure():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chunk_cost.py"), "--chunks", "400", "--requests",
         "20", "--answers", "5", "--connections", "20"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True).stdout
    figures = re.findall(r"([\d.]+) µs", out)
    assert len(figures) == 6, out  # 1, 4 and 20 events a read; an answer; a request; a connection
    assert all(float(f) > 0 for f in figures), out
