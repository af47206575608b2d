"""The event-stream decoder (application/vnd.amazon.eventstream) and the ConverseStream
translator over it: messages built by hand from the published layout, every split point, bad
CRCs, a message over the bound refused from its prelude, and a stream cut short."""
from __future__ import annotations

import re
import struct
import uuid
import zlib

import orjson
import pytest

from kraken.providers.bedrock import MetadataTap
from kraken.providers.bedrock_answer import ChunkTranslator
from kraken.providers.eventstream import (
    Decoder, EventStreamError, Message, MessageTooLarge, encode,
)


def by_hand(headers: bytes, payload: bytes) -> bytes:
    """prelude (total, headers length, CRC of both) | headers | payload | CRC of all before."""
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return head + struct.pack(">I", zlib.crc32(head))


def header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def frame(event: str, payload: dict) -> bytes:
    return encode({":event-type": event, ":content-type": "application/json",
                   ":message-type": "event"}, orjson.dumps(payload))


STREAM = b"".join([
    frame("messageStart", {"role": "assistant"}),
    frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
    frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " world"}}),
    frame("contentBlockStop", {"contentBlockIndex": 0}),
    frame("messageStop", {"stopReason": "end_turn"}),
    frame("metadata", {"usage": {"inputTokens": 7, "outputTokens": 2, "totalTokens": 19,
                                 "cacheReadInputTokens": 4, "cacheWriteInputTokens": 6}}),
])


def test_a_message_built_by_hand_decodes_with_every_header_type():
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678").bytes
    headers = b"".join([
        header(":event-type", 7, struct.pack(">H", 8) + b"metadata"),
        header("t", 0, b""), header("f", 1, b""), header("b", 2, b"\xff"),
        header("s", 3, struct.pack(">h", -2)), header("i", 4, struct.pack(">i", 70000)),
        header("l", 5, struct.pack(">q", 2 ** 40)), header("raw", 6, b"\x00\x02\x01\x02"),
        header("ts", 8, struct.pack(">q", 1_700_000_000_000)), header("id", 9, uid),
    ])
    (msg,) = Decoder().feed(by_hand(headers, b'{"x":1}'))
    assert msg == Message({":event-type": "metadata", "t": True, "f": False, "b": -1, "s": -2,
                           "i": 70000, "l": 2 ** 40, "raw": b"\x01\x02",
                           "ts": 1_700_000_000_000, "id": uid}, b'{"x":1}')
    assert encode({":event-type": "metadata"}, b'{"x":1}') == by_hand(headers[:23], b'{"x":1}')


def test_split_at_every_byte_boundary_gives_the_same_messages():
    whole = Decoder().feed(STREAM)
    assert [m.header(":event-type") for m in whole] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop",
        "messageStop", "metadata"]
    for cut in range(len(STREAM) + 1):
        decoder = Decoder()
        assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == whole
        assert decoder.buffered == 0
    decoder = Decoder()
    assert [m for i in range(len(STREAM)) for m in decoder.feed(STREAM[i:i + 1])] == whole


@pytest.mark.parametrize("at", [9, 40, -6, -1])  # prelude CRC, a header, payload, message CRC
def test_a_flipped_byte_is_a_crc_error_and_the_decoder_stays_failed(at):
    bad = bytearray(frame("messageStop", {"stopReason": "end_turn"}))
    bad[at] ^= 0x01
    decoder = Decoder()
    with pytest.raises(EventStreamError, match="CRC"):
        decoder.feed(bytes(bad))
    with pytest.raises(EventStreamError):
        decoder.feed(STREAM)


def test_a_message_over_the_bound_is_refused_from_its_prelude():
    prelude = struct.pack(">II", 2 << 20, 0)
    decoder = Decoder(max_message=1 << 20)
    with pytest.raises(MessageTooLarge):
        decoder.feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
    assert decoder.buffered == 0


def test_inconsistent_lengths_are_refused():
    prelude = struct.pack(">II", 20, 30)  # headers longer than the message
    with pytest.raises(EventStreamError, match="inconsistent"):
        Decoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)) + bytes(8))


def _same_id(sse: bytes) -> bytes:
    return re.sub(rb"chatcmpl-[0-9a-f]+", b"chatcmpl-X", sse)


def test_translated_stream_is_the_same_whatever_the_splits():
    def translate(pieces):
        t = ChunkTranslator(include_usage=True, model="m", created=1)
        return _same_id(b"".join(t.feed(p) for p in pieces) + t.finish())

    whole = translate([STREAM])
    events = whole.split(b"\n\n")
    assert events[1].endswith(
        b'"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}')
    assert b'"finish_reason":"stop"' in events[3]
    assert orjson.loads(events[4][6:])["usage"] == {
        "prompt_tokens": 17, "completion_tokens": 2, "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 4}}
    assert events[5:] == [b"data: [DONE]", b""]
    for cut in range(len(STREAM) + 1):
        assert translate([STREAM[:cut], STREAM[cut:]]) == whole


def test_bad_crc_mid_stream_ends_with_an_error_event():
    t = ChunkTranslator(include_usage=False, model="m")
    bad = bytearray(frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    bad[-1] ^= 0xFF
    out = t.feed(STREAM[:50]) + t.feed(bytes(bad))
    assert out.endswith(b'"type":"upstream_error","param":null,"code":null}}\n\n')
    assert b"event: error" in out and t.done and t.feed(STREAM) == b"" and t.finish() == b""


def test_an_oversized_message_fails_the_stream_and_is_counted():
    t = ChunkTranslator(include_usage=False, model="m", max_message=64)
    out = t.feed(frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x" * 99}}))
    assert out.startswith(b"event: error\n") and t.overflowed


def test_a_stream_cut_before_message_stop_says_so_and_after_it_ends_with_done():
    cut = ChunkTranslator(include_usage=False, model="m")
    cut.feed(STREAM[:100])
    assert b"ended before the end of the answer" in cut.finish()
    no_metadata = STREAM[: STREAM.index(frame("metadata", {"usage": {
        "inputTokens": 7, "outputTokens": 2, "totalTokens": 19, "cacheReadInputTokens": 4,
        "cacheWriteInputTokens": 6}}))]
    done = ChunkTranslator(include_usage=True, model="m")
    done.feed(no_metadata)
    assert done.finish() == b"data: [DONE]\n\n"


def test_metadata_tap_passes_bytes_through_and_keeps_usage():
    tap = MetadataTap()
    assert b"".join(tap.feed(STREAM[i:i + 7]) for i in range(0, len(STREAM), 7)) == STREAM
    assert tap.flush() == b""
    assert (tap.usage.prompt_tokens, tap.usage.completion_tokens, tap.usage.cached_tokens) == \
        (17, 2, 4)
    assert tap.usage.cache_creation_input_tokens == 6
