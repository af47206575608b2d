"""SinkWrapper, the base of the sinks that wrap a client's (cost, request id): what a wrapper
does not change reaches the wrapped sink unchanged."""
from __future__ import annotations

import pytest

from kraken.gateway.answers import IdentifiedSink
from kraken.gateway.cost_header import CostSink, StreamCostSink
from kraken.http.exchange import SinkWrapper


class RecordingSink:
    started = False
    disconnected = True

    def __init__(self):
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, *args))


WRAPPERS = (SinkWrapper, IdentifiedSink, lambda s: CostSink(s, None, False),
            lambda s: StreamCostSink(s, None))


@pytest.mark.parametrize("make", WRAPPERS)
def test_cork_flush_and_the_rest_reach_the_wrapped_sink(make):
    sink = RecordingSink()
    wrapper = make(sink)
    wrapper.cork()
    wrapper.flush()
    producer = object()
    wrapper.set_producer(producer)
    wrapper.abort()
    assert sink.calls == [("cork",), ("flush",), ("set_producer", producer), ("abort",)]
    assert wrapper.disconnected is True and wrapper.started is False
    sink.started, sink.disconnected = True, False
    assert wrapper.disconnected is False and wrapper.started is True
    # a wrapper sees every byte through its own write: it takes no frames, holds nothing
    assert wrapper.write_frame is None and wrapper.send_held is None


def test_the_base_forwards_the_whole_answer_unchanged():
    sink = RecordingSink()
    wrapper = SinkWrapper(sink)
    wrapper.start(200, [(b"a", b"1")], None)
    wrapper.write(b"x")
    wrapper.end()
    wrapper.respond(404, [], b"{}")
    assert sink.calls == [("start", 200, [(b"a", b"1")], None), ("write", b"x"), ("end",),
                          ("respond", 404, [], b"{}")]


def test_a_name_outside_the_sink_protocol_is_not_handed_through():
    """Forwarding is by name, not ``__getattr__`` (which would cost every attribute load of a
    wrapper its specialisation): what the protocol does not name is not the wrapper's."""
    wrapper = SinkWrapper(RecordingSink())
    with pytest.raises(AttributeError):
        wrapper.pipe_target
    assert "__getattr__" not in vars(SinkWrapper)
