"""The request line: lines of calls ending in the same loop turn share one write, never more
than PIPE_BUF bytes (atomic on a pipe shared by workers), and none is lost or torn."""
from __future__ import annotations

import io

import anyio
import orjson
import pytest

from kraken.config import LoggingConfig
from kraken.gateway.call import Call
from kraken.gateway.request_log import _PIPE_BUF, RequestLog

pytestmark = pytest.mark.anyio


class CountingStream(io.BytesIO):
    """A stdout that remembers each write it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        return super().write(data)


def finished_call(n: int) -> Call:
    call = Call(0, "chat")
    call.reserved = True
    call.status, call.provider, call.model_requested = 200, "p", "m"
    call.end_ns = 1_000_000
    return call


def emit(log: RequestLog, n: int) -> None:
    call = finished_call(n)
    log.emit(call, call.to_record())


async def test_lines_of_one_turn_share_a_write_and_none_is_lost():
    out = CountingStream()
    log = RequestLog(LoggingConfig(), stream=out)
    for n in range(3):
        emit(log, n)
    assert out.writes == []  # held until the loop's next turn
    await anyio.sleep(0)  # one turn: the drain scheduled by the first line runs
    assert len(out.writes) == 1 and out.writes[0].count(b"\n") == 3
    for n in range(3, 40):
        emit(log, n)
    await anyio.sleep(0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 40 and all(orjson.loads(line)["status"] == 200 for line in lines)
    assert 2 < len(out.writes) < 38  # coalesced, but split to stay atomic
    assert all(len(w) <= _PIPE_BUF and w.endswith(b"\n") for w in out.writes)
    ids = [orjson.loads(line)["request_id"] for line in lines]
    assert len(set(ids)) == 40


async def test_a_later_turn_gets_its_own_write():
    out = CountingStream()
    log = RequestLog(LoggingConfig(), stream=out)
    emit(log, 1)
    await anyio.sleep(0)
    emit(log, 2)
    await anyio.sleep(0)
    assert len(out.writes) == 2


def test_without_a_running_loop_each_line_is_written_at_once():
    out = CountingStream()
    log = RequestLog(LoggingConfig(), stream=out)
    emit(log, 1)
    assert len(out.writes) == 1 and orjson.loads(out.writes[0])["status"] == 200


async def test_lines_wait_for_the_turn_of_the_loop_handed_down():
    """With the serving loop handed down, its next turn writes the turn's lines at once."""
    import asyncio

    out = CountingStream()
    log = RequestLog(LoggingConfig(), stream=out, loop=asyncio.get_running_loop())
    for n in range(3):
        emit(log, n)
    assert out.writes == []
    await asyncio.sleep(0)
    assert len(out.writes) == 1 and out.writes[0].count(b"\n") == 3


def test_a_closed_loop_handed_down_writes_the_line_now():
    import asyncio

    loop = asyncio.new_event_loop()
    loop.close()
    out = CountingStream()
    log = RequestLog(LoggingConfig(), stream=out, loop=loop)
    emit(log, 1)
    assert len(out.writes) == 1 and orjson.loads(out.writes[0])["status"] == 200


def line_of(log_cfg: LoggingConfig, call: Call, rand=lambda: 0.0) -> dict | None:
    out = CountingStream()
    log = RequestLog(log_cfg, stream=out, rand=rand)
    log.emit(call, call.to_record())
    return orjson.loads(out.getvalue()) if out.getvalue() else None


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
