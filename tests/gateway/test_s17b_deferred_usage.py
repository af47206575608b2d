"""The SSE tap over a deferred usage parser: usage is converted when read, not as the stream
passes, and the tap's output and usage are the same as over the eager parser."""
from __future__ import annotations

import random

import orjson
import pytest

from kraken.gateway.sse import SseTap
from kraken.providers.family import DeferredUsageParser
from kraken.providers.openai_compat import OpenAICompat, openai_usage, usage_object
from kraken.providers.usage import Usage


def event(obj) -> bytes:
    return b"data: " + orjson.dumps(obj)


CHUNK = event({"id": "c", "choices": [{"index": 0, "delta": {"content": "h\u00e9"}}], "usage": None})
USAGE_ONLY = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5,
                                             "prompt_tokens_details": {"cached_tokens": 1}}})
WITH_CHOICES = event({"choices": [{"index": 0, "delta": {}}], "usage": {"prompt_tokens": 7}})
GROQ = event({"choices": [], "x_groq": {"usage": {"prompt_tokens": 2, "completion_tokens": 9}}})
DEEPSEEK = event({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1,
                                           "prompt_cache_hit_tokens": 2}})
SPACED = b'data: {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2}}'
BAD_JSON = b'data: {"choices": [], "usage": {"prompt_tokens": 8'
DONE = b"data: [DONE]"
EVENTS = [CHUNK, USAGE_ONLY, WITH_CHOICES, GROQ, DEEPSEEK, SPACED, BAD_JSON, DONE]


class Counting:
    """openai_usage, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, raw):
        self.calls += 1
        return openai_usage(raw)


def feed(tap: SseTap, data: bytes, cuts: list[int]) -> bytes:
    out = b""
    for i, j in zip([0] + cuts, cuts + [len(data)]):
        out += tap.feed(data[i:j])
    return out + tap.flush()


def test_the_families_parser_is_deferred_and_called_gives_what_usage_event_gives():
    parser = OpenAICompat.usage_parser(None)
    assert type(parser) is DeferredUsageParser
    for ev in EVENTS:
        assert parser(ev) == OpenAICompat.usage_event(ev)
    assert parser(USAGE_ONLY) == (Usage(3, 5, 1, None), True)
    assert parser(GROQ) == (Usage(2, 9, None, None), False)
    assert parser(DEEPSEEK) == (Usage(4, 1, 2, None), True)


def test_usage_is_converted_when_read_not_as_the_stream_passes():
    convert = Counting()
    tap = SseTap(DeferredUsageParser(usage_object, convert), strip_usage=True)
    out = feed(tap, b"\n\n".join([CHUNK, USAGE_ONLY, DONE]) + b"\n\n", [])
    assert out == b"\n\n".join([CHUNK, DONE]) + b"\n\n"
    assert convert.calls == 0
    assert tap.usage == Usage(3, 5, 1, None)
    assert tap.usage == Usage(3, 5, 1, None) and convert.calls == 1  # once, however often read


def test_a_usage_read_mid_stream_is_replaced_by_a_later_one():
    tap = SseTap(OpenAICompat.usage_parser(None), strip_usage=False)
    tap.feed(USAGE_ONLY + b"\n\n")
    assert tap.usage == Usage(3, 5, 1, None)
    tap.feed(GROQ + b"\n\n" + CHUNK + b"\n\n")
    assert tap.usage == Usage(2, 9, None, None)


def test_no_usage_event_leaves_usage_none():
    tap = SseTap(OpenAICompat.usage_parser(None), strip_usage=True)
    feed(tap, b"\n\n".join([CHUNK, BAD_JSON, DONE]) + b"\n\n", [7])
    assert tap.usage is None


@pytest.mark.parametrize("seed", range(10))
def test_random_streams_give_the_eager_parsers_bytes_and_usage(seed):
    """Random streams of these events (LF or CRLF separated, the last maybe unterminated),
    cut anywhere, hidden or kept: the same output and usage as the tap over usage_event."""
    rng = random.Random(seed)
    for _ in range(150):
        sep = rng.choice([b"\n\n", b"\r\n\r\n"])
        data = sep.join(rng.choices(EVENTS, k=rng.randint(1, 8))) + rng.choice([sep, b""])
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 4))))
        strip = rng.random() < 0.5
        eager = SseTap(OpenAICompat.usage_event, strip_usage=strip)
        deferred = SseTap(OpenAICompat.usage_parser(None), strip_usage=strip)
        assert feed(deferred, data, cuts) == feed(eager, data, cuts), data
        assert deferred.usage == eager.usage, data
