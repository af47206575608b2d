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
