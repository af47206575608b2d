"""The non-stream usage tap: usage is found at the end of a body of any size, whatever the
chunking, from bounded windows (a small window here makes every body "large")."""
from __future__ import annotations

import json
import tracemalloc

import pytest

from kraken.gateway.bodytap import BodyTap
from kraken.providers.anthropic import AnthropicFamily
from kraken.providers.gemini import GeminiNative
from kraken.providers.openai_compat import OpenAICompat
from kraken.providers.usage import Usage

W = 256
TEXT = "Grüße 🌊 世界 — naïve café ✓ " * 40  # ~1.4 KB: several windows
USAGE = {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33,
         "prompt_tokens_details": {"cached_tokens": 3}}
EXPECTED = Usage(11, 22, 3, None)


def openai_body(**extra) -> bytes:
    doc = {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT},
                        "finish_reason": "stop"}],
           "usage": USAGE, **extra}
    return json.dumps(doc, ensure_ascii=False).encode()


def fed(chunks, key: bytes = b"usage", window: int = W) -> bytes | None:
    tap = BodyTap(key, window=window)
    for chunk in chunks:
        tap.feed(chunk)
    return tap.document()


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(body)]
    return [body[a:b] for a, b in zip(edges, edges[1:])]


def test_every_two_chunk_split_finds_the_usage():
    body = openai_body()
    for cut in range(len(body) + 1):
        assert OpenAICompat.usage_from_body(fed(split(body, [cut]))) == EXPECTED, cut


def test_one_byte_chunks_around_the_usage_object_and_split_utf8():
    body = openai_body()
    at = body.index(b'"usage"')
    # 1-byte chunks from inside the content's last multi-byte characters to the very end
    around = list(range(at - 80, len(body)))
    chunks = split(body, around)
    assert any(len(c) == 1 and c[0] >= 0x80 for c in chunks), "UTF-8 sequences are split"
    assert OpenAICompat.usage_from_body(fed(chunks)) == EXPECTED
    assert OpenAICompat.usage_from_body(fed([bytes([b]) for b in body])) == EXPECTED


@pytest.mark.parametrize("window", [140, 141, 142, 143, 200, 333])
def test_tail_window_starting_mid_character_or_mid_string(window):
    """The usage member and what follows are 123 bytes here; the window just has to hold them."""
    body = openai_body()
    for size in (1, 7, 64, 1000):
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        assert OpenAICompat.usage_from_body(fed(chunks, window=window)) == EXPECTED, size


def test_usage_text_inside_the_content_is_not_the_usage():
    fake = 'end "usage":{"prompt_tokens":999,"completion_tokens":999}, "usage": {"x":1}'
    doc = {"choices": [{"message": {"content": TEXT + fake}}], "usage": USAGE}
    body = json.dumps(doc, ensure_ascii=False).encode()
    assert OpenAICompat.usage_from_body(fed([body])) == EXPECTED
    cut_before_usage = body[: body.rindex(b'"usage"')] + b"}"  # only the text remains
    assert fed([cut_before_usage]) is None


def test_a_nested_usage_member_after_the_real_one_is_skipped():
    body = openai_body(system_fingerprint="fp", x_groq={"id": "q", "usage": {"prompt_tokens": 999}})
    assert OpenAICompat.usage_from_body(fed([body])) == EXPECTED


def test_anthropic_message_with_a_usage_key_in_tool_input():
    usage = {"input_tokens": 5, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 1,
             "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 0},
             "output_tokens": 9, "service_tier": "standard"}
    doc = {"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
           "content": [{"type": "text", "text": TEXT},
                       {"type": "tool_use", "id": "t", "name": "n",
                        "input": {"usage": {"input_tokens": 999, "output_tokens": 999}}}],
           "stop_reason": "tool_use", "stop_sequence": None, "usage": usage}
    body = json.dumps(doc, ensure_ascii=False).encode()
    got = AnthropicFamily.usage_from_body(fed([bytes([b]) for b in body]))
    assert (got.prompt_tokens, got.completion_tokens, got.cached_tokens) == (8, 9, 1)


def test_usage_written_first_is_found_in_the_head():
    doc = {"usage": USAGE, "choices": [{"message": {"content": TEXT * 3}}]}
    body = json.dumps(doc, ensure_ascii=False).encode()
    assert OpenAICompat.usage_from_body(fed(split(body, list(range(0, len(body), 3))))) == EXPECTED


def test_gemini_usage_metadata_in_an_object_and_in_an_array_of_chunks():
    meta = {"promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10}
    chunk = {"candidates": [{"content": {"parts": [{"text": TEXT}]}}], "usageMetadata": meta,
             "modelVersion": "g"}
    for doc in (chunk, [chunk, chunk]):
        body = json.dumps(doc, ensure_ascii=False, indent=1).encode()
        got = GeminiNative.usage_from_body(fed([body], key=GeminiNative.usage_key))
        assert got == Usage(4, 6, None, None)


@pytest.mark.parametrize("body", [
    b'{"choices":[{"message":{"content":"' + b"x" * 2000 + b'"}}]}',  # no usage at all
    openai_body()[:-20],  # cut short inside the usage object
    openai_body() + b"garbage",
])
def test_no_usage_or_a_broken_end_gives_none(body):
    doc = fed([body])
    assert doc is None or OpenAICompat.usage_from_body(doc) is None


def test_a_small_body_is_handed_over_whole():
    body = openai_body()
    assert fed([body[:10], body[10:]], window=len(body)) == body


def test_memory_stays_bounded_for_a_huge_body():
    chunk = ("é" * 32 * 1024).encode()  # 64 KiB
    tap = BodyTap()
    tracemalloc.start()
    try:
        tap.feed(b'{"choices":[{"message":{"content":"')
        for _ in range(320):  # 20 MiB
            tap.feed(chunk)
        tap.feed(b'"}}],"usage":' + json.dumps(USAGE).encode() + b"}")
        document = tap.document()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert OpenAICompat.usage_from_body(document) == EXPECTED
    assert peak < 1024 * 1024
