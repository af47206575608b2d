"""The relay per provider read: what it writes leaves within that read (on_read_end), and a
read it did not hold back (one plain chunk, written at once) costs the sink no flush."""
from __future__ import annotations

import asyncio
import time

import pytest

from kraken.config import ProviderConfig
from kraken.gateway.call import Call
from kraken.gateway.relay import Relay
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.response import ResponseParser

pytestmark = pytest.mark.anyio

EVENT = b'data: {"choices":[{"delta":{"content":"x"}}],"n":12345}\n\n'  # 57 bytes: 39


class Sink:
    """An HTTP/1.1 chunked client's sink: cork holds writes until flush or end."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.held: list[bytes] = []
        self.corked = False
        self.flushes = 0

    def _out(self, data: bytes) -> None:
        (self.held if self.corked else self.sent).append(data)

    def start(self, status, headers, length):
        self._out(b"HEAD")

    def write(self, data: bytes) -> None:
        self._out(b"%x\r\n%s\r\n" % (len(data), data))

    def write_frame(self, frame: bytes, data: bytes) -> None:
        self._out(frame)

    def cork(self) -> None:
        self.corked = True

    def flush(self) -> None:
        self.flushes += 1
        self.corked = False
        self.sent += self.held
        self.held = []

    def end(self) -> None:
        self.held.append(b"0\r\n\r\n")
        self.flush()


async def test_each_read_leaves_within_it_and_unheld_reads_need_no_flush():
    family = OpenAICompat(ProviderConfig(name="p", base_url="http://x/v1"), "/v1", "x")
    call = Call(time.perf_counter_ns(), "chat_completions")
    call.provider = "p"
    sink = Sink()
    relay = Relay(call, sink, family, stream=True, hide_usage=True, on_complete=lambda: None)
    parser = ResponseParser(relay)
    parser.on_chunk = relay.on_chunk
    plain, padded = b"39\r\n%s\r\n" % EVENT, b"039\r\n%s\r\n" % EVENT

    def read(data: bytes) -> None:
        parser.feed(data)
        relay.on_read_end()
        assert not sink.held and not sink.corked  # nothing waits for a later read

    read(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + plain)  # head held, then sent
    assert sink.sent == [b"HEAD", plain] and sink.flushes == 1
    for _ in range(3):
        read(plain)  # written at once: no flush
    assert sink.flushes == 1 and sink.sent[-1] == plain
    read(padded)  # not plain (a leading zero): re-framed through on_data, held, flushed at the read's end
    assert sink.flushes == 2 and sink.sent[-1] == plain
    read(plain)
    assert sink.flushes == 2
    read(b"0\r\n\r\n")
    assert relay.state == "done" and sink.sent[-1] == b"0\r\n\r\n"
    assert b"".join(sink.sent[1:]) == plain * 6 + b"0\r\n\r\n"


async def test_a_relay_given_its_loop_does_not_look_the_running_loop_up(monkeypatch):
    """Relay.__init__ takes the caller's loop (the pool's) for its done future: no
    asyncio.get_running_loop(), a getpid syscall per request on 3.11."""
    loop = asyncio.get_running_loop()
    family = OpenAICompat(ProviderConfig(name="p", base_url="http://x/v1"), "/v1", "x")

    def no_lookup():
        raise AssertionError("looked the running loop up")

    monkeypatch.setattr(asyncio, "get_running_loop", no_lookup)
    relay = Relay(Call(time.perf_counter_ns(), "chat_completions"), Sink(), family, stream=True,
                  hide_usage=True, on_complete=lambda: None, loop=loop)
    monkeypatch.undo()
    assert relay.done.get_loop() is loop and not relay.done.done()
    unnamed = Relay(Call(time.perf_counter_ns(), "chat_completions"), Sink(), family,
                    stream=True, hide_usage=True, on_complete=lambda: None)
    assert unnamed.done.get_loop() is loop  # without one: the running loop, as before
