"""The log writer (kraken/logwriter.py) under the process log: a stderr that takes nothing costs
lines (dropped, counted, announced where the gap is) and never the thread that logs; order is
kept; at exit what is queued is written, within a bound when the output stays stuck."""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import subprocess
import sys
import textwrap
import threading

import pytest

from kraken import logwriter

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
DROPPED = re.compile(r"(\d+) process log lines dropped")


def logging_child(fmt: str) -> str:
    """A fresh interpreter logging 500 lines to a stderr nobody reads; it prints the dropped
    count on stdout once every call returned, waits for stdin to close (stderr is read from
    then on) and for what it queued to be written, logs one more line and exits."""
    return textwrap.dedent(f"""
        import logging, sys
        from kraken import logwriter, metrics
        from kraken.config import LoggingConfig
        from kraken.logs import setup_process_logging
        setup_process_logging(LoggingConfig(format={fmt!r}, queue_max_kib=1))
        log = logging.getLogger("kraken.test")
        for n in range(500):
            log.info("line %d", n)
        print(int(metrics.LOG_LINES_DROPPED.labels("process").get()), flush=True)
        sys.stdin.read()
        assert logwriter.flush(10)
        log.warning("line 500")  # queued last: written by the flush at exit
    """)


def read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk
    os.close(fd)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_stderr_nobody_reads_costs_process_lines_never_the_logging_thread(fmt):
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    child = subprocess.Popen([sys.executable, "-c", logging_child(fmt)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=write_end)
    os.close(write_end)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "logging 500 lines waited for stderr"
        lost = int(child.stdout.readline())
        assert lost > 300  # ~60 bytes a line: 4 KiB fit the pipe, 1 KiB the queue
        got = bytearray()
        reader = threading.Thread(target=read_all, args=(read_end, got))
        reader.start()
        child.stdin.close()
        assert child.wait(30) == 0
        reader.join(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    lines = bytes(got).decode().splitlines()
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        messages = [f"{r['level']} {r['logger']} {r['msg']}" for r in records]
    else:
        messages = lines
    expected, announced = 0, 0
    for message in messages:
        if gap := DROPPED.search(message):
            assert "WARNING kraken.logs " in message  # in the stream's own format
            expected += int(gap[1])
            announced += int(gap[1])
        else:
            assert message.endswith(f"line {expected}")  # in order; each gap announced exactly
            expected += 1
    assert announced == lost and expected == 501  # and the last line, logged at exit, is out


class StuckStream:
    """An output whose write waits until the test lets it go (a pipe nobody reads)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        assert self.go.wait(30)
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


def test_a_flush_waits_for_the_output_at_most_its_bound():
    out = StuckStream()
    writer = logwriter.writer(out)
    channel = writer.channel("process", 1 << 20, lambda n: b"dropped %d\n" % n)
    channel.put(b"one\n")
    channel.put(b"two\n")
    assert writer.flush(0.2) is False  # bounded: the output is stuck
    out.go.set()
    assert writer.flush(10) is True
    assert bytes(out.data) == b"one\ntwo\n"
