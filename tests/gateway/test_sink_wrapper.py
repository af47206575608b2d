"""SinkWrapper, the base of the sinks that wrap a client's (cost, request id): what a wrapper
does not change reaches the wrapped sink unchanged."""
from __future__ import annotations

from kraken.gateway.answers import IdentifiedSink
from kraken.gateway.cost_header import CostSink, StreamCostSink
from kraken.http.exchange import SinkWrapper


class RecordingSink:
    started = False
    disconnected = True

    def __init__(self):
        self.calls: list[str] = []

    def cork(self):
        self.calls.append("cork")

    def flush(self):
        self.calls.append("flush")

    def write_frame(self, frame, data):
        self.calls.append("write_frame")


def test_cork_flush_and_the_rest_reach_the_wrapped_sink():
    for make in (SinkWrapper, IdentifiedSink, lambda s: CostSink(s, None, False),
                 lambda s: StreamCostSink(s, None)):
        sink = RecordingSink()
        wrapper = make(sink)
        wrapper.cork()
        wrapper.flush()
        assert sink.calls == ["cork", "flush"]
        assert wrapper.disconnected is True and wrapper.started is False
        # a wrapper sees every byte through its own write: it takes no frames, holds nothing
        assert wrapper.write_frame is None and wrapper.send_held is None
