"""bench/callgrind.py: reading a callgrind dump's totals, and a clear refusal without valgrind."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import callgrind  # noqa: E402

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  /usr/bin/python3.11 -m kraken serve --demo
part: 1
positions: line
events: Ir
summary: 0
fn=(1) main
0 12
totals: 155511792
"""


def test_the_totals_line_is_the_count_and_is_shared_per_request(tmp_path):
    dump = tmp_path / "callgrind.out.4242.1"
    dump.write_text(DUMP)
    assert callgrind.totals(dump) == 155_511_792
    assert callgrind.per_request(155_511_792, 300) == 518_373
    assert callgrind.per_request(10, 0) == 0


def test_a_file_without_totals_is_refused(tmp_path):
    dump = tmp_path / "not-a-dump"
    dump.write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no totals line"):
        callgrind.totals(dump)


def test_without_valgrind_it_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(callgrind.shutil, "which", lambda tool: None)
    assert callgrind.main([]) == 2
    assert "apt-get install -y valgrind" in capsys.readouterr().err


def test_a_dump_per_thread_is_grouped_by_dump_and_the_main_thread_found(tmp_path):
    # --separate-threads=yes: callgrind.out.<pid>.<dump>-<thread>, thread 01 the main one
    for name in ("callgrind.out.4242.1-01", "callgrind.out.4242.1-02", "callgrind.out.4242.2-01",
                 "callgrind.out.4242.2-02", "callgrind.out.4242.2-03", "callgrind.out.99.2-01"):
        (tmp_path / name).write_text(DUMP)
    parts = callgrind.dump_parts(tmp_path, "4242")
    assert sorted(parts) == [1, 2] and len(parts[2]) == 3
    last, whole, main = callgrind.dumped(tmp_path, "4242", 2)
    assert (whole, main) == (3 * 155_511_792, 155_511_792)  # every thread's, the main one's
    assert [p.name for p in last] == ["callgrind.out.4242.2-01", "callgrind.out.4242.2-02",
                                      "callgrind.out.4242.2-03"]
    assert [callgrind.is_main_thread(p) for p in last] == [True, False, False]


def test_a_dump_callgrind_has_not_written_is_waited_for_within_a_bound(tmp_path):
    (tmp_path / "callgrind.out.4242.1-01").write_text(DUMP)
    (tmp_path / "callgrind.out.4242.2-01").write_text("events: Ir\n")  # being written: no totals
    with pytest.raises(SystemExit, match="no complete dump 2"):
        callgrind.dumped(tmp_path, "4242", 2, seconds=0.3)
    with pytest.raises(SystemExit, match="no complete dump 3"):
        callgrind.dumped(tmp_path, "4242", 3, seconds=0.3)
    parts, _, _ = callgrind.dumped(tmp_path, "4242", 1)
    assert [p.name for p in parts] == ["callgrind.out.4242.1-01"]
    (tmp_path / "callgrind.out.4242.4-02").write_text(DUMP)  # a thread's part, not yet the loop's
    with pytest.raises(SystemExit, match="no complete dump 4"):
        callgrind.dumped(tmp_path, "4242", 4, seconds=0.3)
