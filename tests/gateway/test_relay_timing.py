"""The relay's own time (``call.relay_ns``, in ``kraken_overhead_seconds``) when one-chunk reads
are sampled: every read is counted once, at its sample's time, whatever the read count."""
from __future__ import annotations

import itertools

import pytest

from kraken.config import ProviderConfig
from kraken.gateway.call import Call
from kraken.gateway.relay import Relay
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.response import ResponseParser

pytestmark = pytest.mark.anyio
EVENT = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'


class Sink:
    """A ResponseSink that keeps what it is sent."""

    started = True
    disconnected = False

    def __init__(self):
        self.sent: list[bytes] = []

    def start(self, status, headers, length):
        pass

    def write(self, data):
        self.sent.append(data)

    def cork(self):
        pass

    def flush(self):
        pass

    def end(self):
        pass

    def set_producer(self, producer):
        pass


@pytest.mark.parametrize("reads", [1, 2, 8, 9, 10, 17, 23])
async def test_sampled_relay_time_counts_each_read_once(reads):
    call = Call(0, "chat_completions")
    call.provider = "p"
    family = OpenAICompat(ProviderConfig(name="p", base_url="http://x/v1"), "/v1", "x")
    sink = Sink()
    relay = Relay(call, sink, family, stream=True, hide_usage=False, on_complete=lambda: None)
    clock = itertools.count(0, 1000)  # each timed span: 1000 ns
    relay._perf = lambda: next(clock)
    parser = ResponseParser(relay)
    parser.on_chunk = relay.on_chunk
    parser.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    for _ in range(reads):
        parser.feed(b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
    parser.feed(b"0\r\n\r\n")
    assert b"".join(sink.sent) == EVENT * reads
    assert call.relay_ns == 1000 * (1 + reads)  # the head, then each read once
