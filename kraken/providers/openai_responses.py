"""OpenAI's Responses API answers, as the relay reads them.

Usage needs nothing forced: a stream ends with ``response.completed`` (or
``response.incomplete`` / ``response.failed``) whose ``response`` carries ``usage``
(``input_tokens``, ``output_tokens`` and their details); a plain answer has it at the top level.
Errors map as the provider's own OpenAI-compatible family's; a stream that breaks ends with the
Responses API's own ``error`` event.
"""
from __future__ import annotations

import orjson

from kraken.errors import KrakenError
from kraken.providers.error_formats import OPENAI_RESPONSES
from kraken.providers.family import FamilyBase, WireFamily
from kraken.providers.usage import Usage
from kraken.providers.wire import usage_in_body

__all__ = ["ResponsesFamily", "responses_usage", "usage_event"]

_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def responses_usage(usage: dict) -> Usage:
    """The Responses API's usage object (``input_tokens``/``output_tokens`` and their details)."""
    return Usage.from_openai({
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "prompt_tokens_details": usage.get("input_tokens_details"),
        "completion_tokens_details": usage.get("output_tokens_details"),
    })


def usage_event(event: bytes) -> tuple[Usage, bool] | None:
    """For one SSE event: the usage of a final ``response.*`` event (never hidden)."""
    start = event.find(b"data:")
    if start < 0:
        return None
    try:
        obj = orjson.loads(event[start + 5 :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("type") not in _FINAL:
        return None
    response = obj.get("response")
    usage = response.get("usage") if isinstance(response, dict) else None
    return (responses_usage(usage), False) if isinstance(usage, dict) else None


def usage_from_body(body: bytes) -> Usage | None:
    return usage_in_body(body, responses_usage)


class ResponsesFamily(FamilyBase):
    """Reads a Responses API exchange of one OpenAI-compatible provider (``base``)."""

    __slots__ = ("authorized", "base", "cfg", "name")

    def __init__(self, base: WireFamily):
        self.base, self.cfg, self.name = base, base.cfg, base.name
        self.authorized = base.authorized  # the key goes where the provider's family puts it

    usage_event = staticmethod(usage_event)
    usage_from_body = staticmethod(usage_from_body)

    @staticmethod
    def usage_parser():
        return usage_event

    def map_error(self, status: int, body: bytes) -> KrakenError:
        return self.base.map_error(status, body)

    sse_error_event = staticmethod(OPENAI_RESPONSES.sse_event)
    """The Responses API's own ``error`` event shape."""
