"""Once start-up is done, Python's new arenas are mapped with their pages present
(``kraken/csrc/arena.c``, set by ``app._release_startup_memory``): a burst's new objects take no
page fault each. Measured in a child process, on its own heap: the moment its mapped data grows
by a new arena, how much of what it has mapped is not resident."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kraken import speedups

PROBE = r'''
import sys
if sys.argv[1] == "serving":
    from kraken import app
    app._release_startup_memory()

def mapped_and_resident():
    """VmData and RssAnon, KiB: what the process has mapped, and of it what is resident."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmData", "RssAnon"):
                fields[name] = int(value.split()[0])
    return fields["VmData"], fields["RssAnon"]

keep = [None] * 400_000
mapped0, resident0 = mapped_and_resident()
for n in range(0, len(keep), 64):  # small objects, 64 at a time, until a new arena is mapped
    for i in range(n, n + 64):
        keep[i] = (i,)
    mapped, resident = mapped_and_resident()
    if mapped - mapped0 >= 1024:
        break
else:
    raise SystemExit("no new arena")
print((mapped - resident) - (mapped0 - resident0))
'''


def untouched_growth_kib(mode: str) -> int:
    """How much more of the child's mapped memory is not resident once a new arena came."""
    env = dict(os.environ)
    env.pop("KRAKEN_PURE_PYTHON", None)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(speedups.native("populate_arenas") is None,
                    reason="the C extension was not built (test_speedups.py fails for that)")
def test_after_start_up_a_new_arena_is_resident_before_its_objects_touch_it():
    plain = untouched_growth_kib("plain")
    serving = untouched_growth_kib("serving")
    # Python's own arena: mapped, and most of it not yet touched by the objects made so far
    assert plain >= 256
    # Kraken's, once serving: the new arena resident whole, so less of what is mapped is
    # untouched than before it came (the objects made meanwhile touched older pages)
    assert serving < 0
    assert plain - serving >= 512
