"""Usage.from_openai: only non-negative integers count (never a bool, a float or a string);
token details count only when they are objects."""
from __future__ import annotations

import enum
import json

import orjson

import pytest

from kraken.providers.usage import Usage


class Count(enum.IntEnum):
    FIVE = 5


@pytest.mark.parametrize("value,counted", [
    (7, 7), (0, 0), (Count.FIVE, 5), (-1, None), (True, None), (False, None), (7.0, None),
    ("7", None), (None, None), ([7], None),
])
def test_a_count_is_a_non_negative_integer(value, counted):
    usage = Usage.from_openai({"prompt_tokens": value, "completion_tokens": value,
                               "prompt_tokens_details": {"cached_tokens": value},
                               "completion_tokens_details": {"reasoning_tokens": value}})
    assert usage == Usage(counted, counted, counted, counted)


@pytest.mark.parametrize("details", [None, 0, [], [{"cached_tokens": 3}], "x", {}])
def test_details_that_are_not_objects_give_no_counts(details):
    usage = Usage.from_openai({"prompt_tokens": 3, "completion_tokens": 4,
                               "prompt_tokens_details": details,
                               "completion_tokens_details": details})
    assert usage == Usage(3, 4, None, None)


def test_counts_as_given_and_absent_ones_are_none():
    assert Usage.from_openai({"prompt_tokens": 12, "completion_tokens": 20,
                              "prompt_tokens_details": {"cached_tokens": 2},
                              "completion_tokens_details": {"reasoning_tokens": 5}}) == Usage(12, 20, 2, 5)
    assert Usage.from_openai({}) == Usage()


def test_each_count_is_judged_on_its_own():
    assert Usage.from_openai({"prompt_tokens": -1, "completion_tokens": 4,
                              "prompt_tokens_details": {"cached_tokens": True},
                              "completion_tokens_details": {"reasoning_tokens": 0}}) == \
        Usage(None, 4, None, 0)
    assert Usage.from_openai({"prompt_tokens": Count.FIVE, "completion_tokens": 4.0,
                              "prompt_tokens_details": {"cached_tokens": 3},
                              "completion_tokens_details": {"reasoning_tokens": -2}}) == \
        Usage(5, None, 3, None)


HUGE = [2**53, 2**63, 2**64 - 1, 10**30]
"""Counts past JSON's safe integer range (2**53 - 1): a backend's unsigned -1 and the like."""


@pytest.mark.parametrize("value", HUGE)
def test_a_count_past_the_safe_integer_range_is_unknown(value):
    usage = Usage.from_openai({"prompt_tokens": value, "completion_tokens": value,
                               "prompt_tokens_details": {"cached_tokens": value},
                               "completion_tokens_details": {"reasoning_tokens": value}})
    assert usage == Usage()
    top = 2**53 - 1
    assert Usage.from_openai({"prompt_tokens": top, "completion_tokens": top}) == Usage(top, top)


@pytest.mark.parametrize("value", [*HUGE, -1, 1.0, "9", True])
def test_every_familys_usage_reading_takes_the_one_rule(value):
    """Anthropic (and Bedrock through it), Gemini, DeepSeek's cache hits, the Responses API,
    rerank and Cohere units, transcriptions and batch results read counts the same way."""
    from kraken.providers.anthropic import AnthropicFamily
    from kraken.providers.bedrock_answer import bedrock_usage
    from kraken.providers.body_family import rerank_usage, search_units
    from kraken.providers.gemini import gemini_usage
    from kraken.providers.openai_audio import audio_usage
    from kraken.providers.openai_compat import openai_usage
    from kraken.providers.openai_responses import responses_usage
    from kraken.providers.usage import AnthropicUsage, token_count

    assert token_count(value) is None
    assert AnthropicUsage.from_anthropic(
        {"input_tokens": value, "output_tokens": value, "cache_read_input_tokens": value,
         "cache_creation": {"ephemeral_5m_input_tokens": value,
                            "ephemeral_1h_input_tokens": value}}) == AnthropicUsage()
    body = b'{"usage":{"input_tokens":%s,"output_tokens":2}}' % json.dumps(value).encode()
    assert AnthropicFamily.usage_from_body(body) == AnthropicUsage(output_tokens=2)
    assert bedrock_usage({"inputTokens": value, "outputTokens": 2}) == AnthropicUsage(
        output_tokens=2)
    assert gemini_usage({"promptTokenCount": value, "candidatesTokenCount": value,
                         "thoughtsTokenCount": value, "cachedContentTokenCount": value}) == Usage()
    assert openai_usage({"prompt_cache_hit_tokens": value}) == Usage()
    assert responses_usage({"input_tokens": value, "output_tokens": 2}) == Usage(None, 2)
    assert rerank_usage({"total_tokens": value}) is None
    units = b'{"meta":{"billed_units":{"search_units":%s}}}' % json.dumps(value).encode()
    assert search_units(units) is None
    assert audio_usage({"type": "tokens", "input_tokens": value, "output_tokens": 2}) == Usage(
        None, 2)
    if value in HUGE or value == -1:  # a duration may be a float; its bound is the same
        assert audio_usage({"type": "duration", "seconds": float(value)}) is None


def test_batch_results_with_a_huge_count_read_it_as_unknown():
    from kraken.providers.openai_files import FilesFamily, JsonlUsageTap
    from kraken.providers.openai_compat import OpenAICompat  # noqa: F401  (family's base)

    tap = JsonlUsageTap()
    for prompt in (2**64 - 1, 5, 2**53 - 1, 2**53 - 1):
        line = {"response": {"body": {"model": "m", "usage": {
            "prompt_tokens": prompt, "completion_tokens": 2**53 - 1}}}}
        tap.feed(orjson.dumps(line) + b"\n")
    for responses in (2**64 - 1, 3):
        line = {"response": {"body": {"usage": {"input_tokens": responses,
                                                 "output_tokens": 1}}}}
        tap.feed(orjson.dumps(line) + b"\n")
    doc = tap.document()  # no sum beyond 64 bits, so it encodes

    class Base:
        cfg = name = authorized = None

    usage = FilesFamily(Base(), "file-huge").usage_from_body(doc)
    assert (usage.prompt_tokens, usage.completion_tokens) == (None, None)  # 2 * (2**53 - 1) + 8
