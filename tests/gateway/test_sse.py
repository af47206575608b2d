"""The SSE tap: output bytes equal the input minus (only) a hidden usage-only event."""
from __future__ import annotations

import pytest

from kraken.gateway.sse import SseTap
from kraken.providers.openai_compat import OpenAICompat

CHUNK = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"h\xc3\xa9"}}],"usage":null}'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}'
DONE = b"data: [DONE]"


def stream(sep: bytes = b"\n\n") -> bytes:
    return sep.join([CHUNK, CHUNK, USAGE, DONE]) + sep


def run(data: bytes, cuts: list[int], strip: bool, max_event: int = 1 << 20):
    tap = SseTap(OpenAICompat.usage_event, strip_usage=strip, max_event_bytes=max_event)
    out = b""
    for i, j in zip([0] + cuts, cuts + [len(data)]):
        out += tap.feed(data[i:j])
    return out + tap.flush(), tap


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"], ids=["lf", "crlf"])
def test_every_split_point_strips_only_the_usage_event(sep):
    data = stream(sep)
    expected = sep.join([CHUNK, CHUNK, DONE]) + sep
    for cut in range(1, len(data)):
        out, tap = run(data, [cut], strip=True)
        assert out == expected, cut
        assert tap.usage.completion_tokens == 5


def test_byte_by_byte_passthrough_is_identical_and_finds_usage():
    data = stream()
    out, tap = run(data, list(range(1, len(data))), strip=False)
    assert out == data and tap.usage.prompt_tokens == 3


def test_usage_with_choices_is_never_hidden():
    mixed = b'data: {"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}\n\n'
    out, tap = run(mixed, [], strip=True)
    assert out == mixed and tap.usage.prompt_tokens == 1


def test_event_over_the_bound_passes_through_unchanged():
    big = b"data: " + b"x" * 5000 + b"\n\n" + USAGE + b"\n\n"
    out, tap = run(big, [100, 4000], strip=True, max_event=1000)
    assert out == big and tap.overflowed


def test_unterminated_last_event_is_flushed():
    data = CHUNK + b"\n\n" + DONE
    out, _ = run(data, [10], strip=True)
    assert out == data


@pytest.mark.parametrize("strip", [True, False], ids=["strip", "keep"])
def test_one_whole_event_per_read(strip):
    """A paced stream's usual reads (the tap's whole-events path)."""
    events = [CHUNK, CHUNK, USAGE, DONE]
    reads = [event + b"\n\n" for event in events]
    out, tap = run(b"".join(reads), [sum(map(len, reads[:i])) for i in range(1, len(reads))], strip)
    kept = [CHUNK, CHUNK, DONE] if strip else events
    assert out == b"".join(event + b"\n\n" for event in kept)
    assert (tap.usage.prompt_tokens, tap.usage.completion_tokens) == (3, 5)


def test_a_read_with_a_spaced_usage_event_before_a_compact_one():
    """Both forms in one whole-events read: each is parsed, in order; the usage-only one is cut."""
    spaced = b'data: {"id":"c","choices":[],"usage": {"prompt_tokens":1,"completion_tokens":2}}'
    compact = b'data: {"id":"c","choices":[{"index":0}],"usage":{"prompt_tokens":3,"completion_tokens":5}}'
    read = b"\n\n".join([CHUNK, spaced, compact, DONE]) + b"\n\n"
    out, tap = run(read, [], strip=True)
    assert out == b"\n\n".join([CHUNK, compact, DONE]) + b"\n\n"
    assert tap.usage.completion_tokens == 5


@pytest.mark.parametrize("pad", [1, 40], ids=["small", "whole-answer"])
@pytest.mark.parametrize("first", ["spaced", "compact"])
def test_a_read_of_whole_events_finds_either_form_first(pad, first):
    """A read of whole events (a few, or a whole answer) is searched for both forms: the
    earlier one is parsed first, both are found, only the usage-only one is cut."""
    spaced = b'data: {"id":"c","choices":[],"usage": {"prompt_tokens":1,"completion_tokens":2}}'
    compact = b'data: {"id":"c","choices":[{"index":0}],"usage":{"prompt_tokens":3,"completion_tokens":5}}'
    pair = [spaced, compact] if first == "spaced" else [compact, spaced]
    read = b"\n\n".join([CHUNK] * pad + pair + [DONE]) + b"\n\n"
    assert len(read) > 2048 if pad == 40 else len(read) < 1024
    out, tap = run(read, [], strip=True)
    assert out == b"\n\n".join([CHUNK] * pad + [compact, DONE]) + b"\n\n"
    assert tap.usage.completion_tokens == (2 if first == "compact" else 5)  # the last one read
    plain, _ = run(b"\n\n".join([CHUNK] * pad + [DONE]) + b"\n\n", [], strip=True)
    assert plain.count(b"data:") == pad + 1
