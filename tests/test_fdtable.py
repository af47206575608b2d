"""The descriptor table is grown once at start (kraken/fdtable.py), read back from the
kernel's own count of slots (``FDSize`` in /proc/<pid>/status)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from harness import kraken_process, running_mock

PROBE = """
import json, os, resource, sys, threading, time
from kraken import fdtable
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()  # as Kraken: threads
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
lim = 5000 if hard == resource.RLIM_INFINITY else min(5000, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (lim, hard))  # a fresh machine's soft limit: 1024
top = min(3000, lim)
def slots():
    for line in open("/proc/self/status"):
        if line.startswith("FDSize:"):
            return int(line.split()[1])
{setup}
before_fds, before_slots = sorted(os.listdir("/proc/self/fd")), slots()
asked = fdtable.reserve_descriptors({limit})
after_fds = sorted(os.listdir("/proc/self/fd"))
print(json.dumps({{"asked": asked, "before_slots": before_slots, "slots": slots(), "lim": lim,
                  "top": top, "same_fds": before_fds == after_fds, "extra": {extra}}}))
"""


def probe(limit: str = "None", setup: str = "", extra: str = "None") -> dict:
    """Run ``reserve_descriptors(limit)`` in a fresh process with a second thread, its soft
    limit on open files at ``lim`` (5000, or the hard limit if lower)."""
    code = PROBE.format(limit=limit, setup=setup, extra=extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_table_is_grown_to_the_limit_and_no_descriptor_is_left_open():
    got = probe(limit="top")
    assert got["before_slots"] < got["top"]  # a fresh process starts small
    assert got["asked"] == got["top"]
    assert got["slots"] >= got["top"]
    assert got["same_fds"]


def test_a_descriptor_open_at_the_top_is_kept_untouched():
    setup = "r, w = os.pipe(); os.dup2(w, top - 1); os.close(w)"
    extra = "(os.write(top - 1, b'kept'), os.read(r, 4).decode())[1]"
    got = probe(limit="top", setup=setup, extra=extra)
    assert got["extra"] == "kept"  # still the pipe's write end, not replaced
    assert got["same_fds"]
    assert got["slots"] >= got["top"]


def test_the_default_is_the_soft_open_files_limit():
    got = probe()
    assert got["asked"] == got["lim"]
    assert got["slots"] >= got["lim"]


def test_the_default_is_capped_under_a_larger_limit():
    got = probe(setup="fdtable.MAX_RESERVED = lim // 2")
    assert got["asked"] == got["lim"] // 2
    assert got["lim"] // 2 <= got["slots"] < got["lim"]  # the kernel rounds up, not that far


def test_a_limit_too_small_to_matter_does_nothing():
    got = probe(limit="1")
    assert got["asked"] == 0
    assert got["same_fds"]


def fd_slots(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("FDSize:"):
            return int(line.split()[1])
    raise AssertionError("no FDSize line")


@pytest.mark.anyio
async def test_kraken_serve_starts_with_its_table_grown(tmp_path):
    """Idle, Kraken holds a few dozen descriptors (a table of 64 slots without this)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        assert kp.proc is not None
        assert fd_slots(kp.proc.pid) >= min(soft, 65_536)
        assert len(list(Path(f"/proc/{kp.proc.pid}/fd").iterdir())) < 256
