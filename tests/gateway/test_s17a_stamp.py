"""A call's request id and wall-clock time are made once its upstream request is sent (while
the provider works), not before the send; whoever reads them first gets them made then, and
they never change afterwards."""
from __future__ import annotations

import time

import pytest

from kraken.gateway.call import Call
from kraken.gateway.endpoints import chat
from kraken.upstream.connection import UpstreamConnection
from test_phases import Collected, gateway, new_call, parsed, request

pytestmark = pytest.mark.anyio


async def test_the_id_is_made_after_the_send_and_is_the_one_the_client_and_record_get(
        tmp_path, monkeypatch):
    at_send = []
    send = UpstreamConnection.send

    def spy(self, *args, **kwargs):
        at_send.append(call.stamped)
        return send(self, *args, **kwargs)

    monkeypatch.setattr(UpstreamConnection, "send", spy)
    async with gateway(tmp_path) as gw:
        before = time.time()
        call, sink, req = new_call(), Collected(), request()
        gw.admit(call)
        await gw.dispatch(call, chat.ENDPOINT, gw.route(call, chat.ENDPOINT, "mock-gpt"),
                          parsed(req), sink)
        assert at_send == [False] and call.stamped  # made after the send, not before
        assert dict(sink.headers)[b"x-request-id"] == call.request_id.encode()
        assert call.request_id.startswith("req_") and len(call.request_id) == 28
        assert before - 1 < call.ts <= time.time()
        journal = b"".join(p.read_bytes() for p in (tmp_path / "journal").iterdir())
        assert journal.count(call.request_id.encode()) == 1


def test_a_read_before_the_stamp_makes_them_and_the_stamp_keeps_them():
    call = Call(time.perf_counter_ns(), "chat_completions")
    assert not call.stamped
    rid, ts = call.request_id, call.ts  # a refusal's answer reads them before any send
    assert call.stamped and rid.startswith("req_")
    call.stamp()
    assert (call.request_id, call.ts) == (rid, ts)
    other = Call(time.perf_counter_ns(), "chat_completions")
    ts_first = other.ts
    assert other.request_id != rid and other.ts == ts_first
    with pytest.raises(AttributeError):
        call.no_such_field  # noqa: B018  (other missing names still raise)


def test_ts_is_the_wall_clock_time_the_head_was_complete():
    received = time.perf_counter_ns() - 2_000_000_000  # the head was read 2 s ago
    call = Call(received, "chat_completions")
    assert abs(call.ts - (time.time() - 2.0)) < 0.5
