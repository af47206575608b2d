"""Usage.from_openai: only non-negative integers count (never a bool, a float or a string);
token details count only when they are objects."""
from __future__ import annotations

import enum

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
