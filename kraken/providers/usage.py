"""Token usage as providers report it, normalised to the record's four counts."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


MAX_COUNT = 2**53 - 1
"""The largest count taken as reported (JSON's safe integer range): a larger one is a backend's
bug (an unsigned -1 is 2**64 - 1), which would charge a customer's cap or wallet absurdly and
which the store cannot hold; it is read as unknown."""


def token_count(value: object) -> int | None:
    """A provider's count as the record takes it: a plain int in [0, MAX_COUNT], else None
    (unknown): negative numbers, floats, strings, bools and absurd sizes are not counts."""
    # type(...) is int first: what a JSON parser gives, one check (the usual case)
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value if 0 <= value <= MAX_COUNT else None
    return None


@dataclass(slots=True)  # not frozen: see kraken/http/exchange.py Request
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    @classmethod
    def from_openai(cls, usage: dict) -> "Usage":
        get = usage.get
        prompt, completion = get("prompt_tokens"), get("completion_tokens")
        cached = get("prompt_tokens_details")
        cached = cached.get("cached_tokens") if isinstance(cached, dict) else None
        reasoning = get("completion_tokens_details")
        reasoning = reasoning.get("reasoning_tokens") if isinstance(reasoning, dict) else None
        # Once per stream. A count that is a plain int in range (what a JSON parser gives) is
        # taken as it is, without a call to token_count; anything else goes through it.
        # Positional: the slots dataclass's __init__ takes them faster than by keyword.
        top, count = MAX_COUNT, token_count
        return cls(
            prompt if type(prompt) is int and 0 <= prompt <= top else count(prompt),
            completion if type(completion) is int and 0 <= completion <= top else count(completion),
            cached if type(cached) is int and 0 <= cached <= top else count(cached),
            reasoning if type(reasoning) is int and 0 <= reasoning <= top else count(reasoning),
        )


@dataclass(slots=True)  # not frozen: see kraken/http/exchange.py Request
class AnthropicUsage:
    """Anthropic's usage block: unlike OpenAI, its input counts are disjoint.

    ``input_tokens`` is only the uncached part of the prompt; cache reads and cache writes are
    counted beside it. ``cache_creation_1h_input_tokens`` is the part of
    ``cache_creation_input_tokens`` written with the 1-hour TTL (the rest used the 5-minute TTL).

    The four properties at the bottom give the record's normalised counts, with OpenAI's meaning
    (cached and reasoning tokens are subsets of prompt and completion).
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation_1h_input_tokens: int | None = None

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any]) -> AnthropicUsage:
        """From a Messages API ``usage`` object (a response, or message_start + message_delta
        merged by the caller; message_delta's ``output_tokens`` is cumulative)."""
        creation = token_count(usage.get("cache_creation_input_tokens"))
        detail = usage.get("cache_creation")
        one_hour = None
        if isinstance(detail, Mapping):
            one_hour = token_count(detail.get("ephemeral_1h_input_tokens"))
            if creation is None:
                five_min = token_count(detail.get("ephemeral_5m_input_tokens"))
                if five_min is not None or one_hour is not None:
                    creation = (five_min or 0) + (one_hour or 0)
        return cls(
            input_tokens=token_count(usage.get("input_tokens")),
            output_tokens=token_count(usage.get("output_tokens")),
            cache_read_input_tokens=token_count(usage.get("cache_read_input_tokens")),
            cache_creation_input_tokens=creation,
            cache_creation_1h_input_tokens=one_hour,
        )

    @property
    def prompt_tokens(self) -> int | None:
        if self.input_tokens is None:
            return None
        return (
            self.input_tokens
            + (self.cache_read_input_tokens or 0)
            + (self.cache_creation_input_tokens or 0)
        )

    @property
    def completion_tokens(self) -> int | None:
        return self.output_tokens

    @property
    def cached_tokens(self) -> int | None:
        return self.cache_read_input_tokens

    @property
    def reasoning_tokens(self) -> int | None:
        # Anthropic bills thinking inside output_tokens and does not report it apart.
        return None
