"""The request line: made on the event loop, written by the log writer's thread (never the
caller's), whole, in order, in writes of at most PIPE_BUF bytes (atomic on a pipe shared by
workers); a stdout that takes nothing costs lines, counted and announced, never the caller's
time."""
from __future__ import annotations

import fcntl
import io
import os
import threading

import orjson

from kraken import logwriter, metrics
from kraken.config import LoggingConfig
from kraken.gateway.call import Call
from kraken.gateway.request_log import DROPPED_MSG, RequestLog

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class CountingStream(io.BytesIO):
    """A stdout that remembers each write it was given, and the thread that gave it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.threads: set[threading.Thread] = set()

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        self.threads.add(threading.current_thread())
        return super().write(data)


def finished_call(n: int) -> Call:
    call = Call(0, "chat")
    call.reserved = True
    call.status, call.provider, call.model_requested = 200, "p", f"m{n}"
    call.end_ns = 1_000_000
    return call


def emit(log: RequestLog, n: int) -> None:
    call = finished_call(n)
    log.emit(call, call.to_record())


def written(out: CountingStream) -> bytes:
    """What the writer thread wrote to ``out`` once every line emitted so far is out."""
    assert logwriter.writer(out).flush(10)
    return out.getvalue()


def test_lines_are_written_by_the_writer_thread_whole_in_order_in_atomic_writes():
    out = CountingStream()
    log = RequestLog(LoggingConfig(), stream=out)
    for n in range(40):
        emit(log, n)
    lines = [orjson.loads(line) for line in written(out).splitlines()]
    assert [line["model"] for line in lines] == [f"m{n}" for n in range(40)]
    assert len({line["request_id"] for line in lines}) == 40
    assert all(len(w) <= logwriter.PIPE_BUF and w.endswith(b"\n") for w in out.writes)
    assert out.threads and threading.current_thread() not in out.threads


def test_a_stdout_that_takes_nothing_costs_lines_counted_and_announced_not_time():
    """The pipe is full and nobody reads it: every ``emit`` still returns (the caller never
    waits); lines past the queue's budget are dropped and counted; once the pipe is read,
    the queued lines come out in order, and at each gap one line says how many were lost."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    out = open(write_end, "wb", buffering=0)
    dropped = metrics.LOG_LINES_DROPPED.labels("request")
    before = dropped.get()
    log = RequestLog(LoggingConfig(queue_max_kib=1), stream=out)
    caller = threading.Thread(target=lambda: [emit(log, n) for n in range(200)], daemon=True)
    caller.start()  # ~70 KB of lines: 4 KiB fit the pipe, 1 KiB the queue
    caller.join(10)
    assert not caller.is_alive(), "emit waited for the full pipe"
    lost = dropped.get() - before
    assert lost > 150
    got = bytearray()
    reader = threading.Thread(target=read_all, args=(read_end, got))
    reader.start()
    assert logwriter.writer(out).flush(10)  # the pipe drained: what was queued is out
    emit(log, 200)  # the first line after the gap: its notice goes first
    assert logwriter.writer(out).flush(10)
    out.close()
    reader.join(10)
    lines = [orjson.loads(line) for line in bytes(got).splitlines()]  # none torn
    assert dropped.get() - before == lost
    assert lines[-2]["msg"] == DROPPED_MSG and lines[-1]["model"] == "m200"
    expected, announced = 0, 0
    for line in lines:
        if line["msg"] == DROPPED_MSG:
            assert line["level"] == "WARNING" and line["dropped"] > 0
            expected += line["dropped"]
            announced += line["dropped"]
        else:
            assert line["model"] == f"m{expected}"  # in order; every gap announced, exactly
            expected += 1
    assert announced == lost and expected == 201


def read_all(fd: int, into: bytearray) -> None:
    """Read the pipe until its writer closes it."""
    while chunk := os.read(fd, 65536):
        into += chunk
    os.close(fd)


def line_of(log_cfg: LoggingConfig, call: Call, rand=lambda: 0.0) -> dict | None:
    out = CountingStream()
    log = RequestLog(log_cfg, stream=out, rand=rand)
    log.emit(call, call.to_record())
    return orjson.loads(written(out)) if written(out) else None


def test_model_names_are_bounded_and_nothing_else_changes():
    from kraken.logs import VALUE_LIMIT

    call = finished_call(1)
    call.model_requested = "p/" + "x" * 300
    call.model_dispatched = "y" * VALUE_LIMIT
    line = line_of(LoggingConfig(), call)
    assert line["model"] == call.model_requested[:VALUE_LIMIT]
    assert line["model_dispatched"] == call.model_dispatched  # at the limit: whole
    assert list(line) == ["ts", "level", "msg", "request_id", "customer_id", "route", "model",
                          "model_dispatched", "provider", "status", "stream", "ttfb_ms",
                          "latency_ms", "fallback", "error_type"]
    call = finished_call(2)
    call.model_requested = None
    line = line_of(LoggingConfig(), call)
    assert line["model"] is None and line["model_dispatched"] is None
    assert (line["level"], line["status"], line["route"]) == ("INFO", 200, "chat")


def test_level_and_sampling_decide_which_lines_are_written():
    ok, failed = finished_call(1), finished_call(2)
    failed.status = 502
    drawn = []

    def rand():
        drawn.append(1)
        return 0.5

    assert line_of(LoggingConfig(sampling=1.0), ok, rand) is not None and drawn == []
    assert line_of(LoggingConfig(sampling=0.4), ok, rand) is None  # 0.5 >= 0.4: dropped
    assert line_of(LoggingConfig(sampling=0.6), ok, rand) is not None
    assert line_of(LoggingConfig(sampling=0.0), failed, rand)["level"] == "WARNING"
    assert line_of(LoggingConfig(level="WARNING"), ok) is None
    assert line_of(LoggingConfig(level="WARNING"), failed)["status"] == 502
    assert line_of(LoggingConfig(level="ERROR"), failed) is None
