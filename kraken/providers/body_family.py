"""Reading the usage of an OpenAI-compatible provider's one-body answers whose ``usage`` is not
Chat Completions' (images, rerank): the provider's own family with another usage reader.

gpt-image answers say ``usage: {input_tokens, output_tokens, ...}`` (read as the Responses
API's); rerank servers say ``usage: {total_tokens}`` (Jina, vLLM: all of it is input), Cohere's
v2 says ``meta.billed_units.search_units`` (one search unit: one query over up to 100
documents), recorded as prompt units the way audio seconds and speech characters are, so a
``[prices.<kind>]`` entry prices them per million units.
"""
from __future__ import annotations

from typing import Callable

import orjson

from kraken.errors import KrakenError
from kraken.providers.family import FamilyBase, WireFamily
from kraken.providers.usage import Usage, token_count
from kraken.providers.wire import usage_in_body

__all__ = ["BodyFamily", "RerankFamily", "rerank_usage", "search_units"]


def rerank_usage(usage: dict) -> Usage | None:
    """A rerank server's ``usage``: ``prompt_tokens`` if given (Jina), else ``total_tokens``."""
    tokens = usage.get("prompt_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        tokens = usage.get("total_tokens")
    tokens = token_count(tokens)
    if tokens is None:
        return None
    return Usage(prompt_tokens=tokens, completion_tokens=0)


def search_units(body: bytes) -> Usage | None:
    """Cohere v2's ``meta.billed_units.search_units`` of a whole rerank answer, as prompt units."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    meta = obj.get("meta") if isinstance(obj, dict) else None
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    units = token_count(billed.get("search_units") if isinstance(billed, dict) else None)
    if units is None:
        return None
    return Usage(prompt_tokens=units, completion_tokens=0)


class BodyFamily(FamilyBase):
    """``base``'s answers (errors, BYOK key placement) with ``convert`` reading ``usage``."""

    __slots__ = ("_convert", "authorized", "base", "cfg", "name")

    def __init__(self, base: WireFamily, convert: Callable[[dict], Usage | None]):
        self.base, self.cfg, self.name = base, base.cfg, base.name
        self.authorized = base.authorized
        self._convert = convert

    def usage_from_body(self, body: bytes) -> Usage | None:
        return usage_in_body(body, self._convert)


class RerankFamily(BodyFamily):
    """A rerank server's answers: ``usage`` (Jina, vLLM), else Cohere v2's search units. The
    relay hands over a rerank answer whole (it fits the body tap's window: a result is an index
    and a score); a larger one is read for ``usage`` only."""

    __slots__ = ()

    def __init__(self, base: WireFamily):
        super().__init__(base, rerank_usage)

    def usage_from_body(self, body: bytes) -> Usage | None:
        return usage_in_body(body, rerank_usage) or search_units(body)

    def usage_parser(self):
        return _no_usage  # never streamed

    def map_error(self, status: int, body: bytes) -> KrakenError:
        return self.base.map_error(status, body)

    def sse_error_event(self, exc: KrakenError) -> bytes:
        return self.base.sse_error_event(exc)


def _no_usage(event: bytes) -> None:
    return None


