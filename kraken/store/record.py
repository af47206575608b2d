"""The one metadata record per request, with exactly the fields Kraken's policy names.

No field can hold prompt or response text: every value is a number, a flag, an enum-like
label or an identifier chosen by Kraken or the operator.

A tuple of the values in ``FIELD_NAMES`` order, with a read-only property per field: one is
built per request on the hot path, and a frozen dataclass paid ``object.__setattr__`` per field
(~3.6 us for the 20 here, ~0.9 us as a tuple). The tuple is also the store's row as it is.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any

_new_tuple = tuple.__new__


class RequestRecord(tuple):
    """Immutable, like the frozen dataclass it replaces: same fields, keywords and defaults."""

    __slots__ = ()

    ts: float
    """Unix time (seconds) when the request arrived."""
    request_id: str
    customer_id: str | None
    model_requested: str | None
    model_dispatched: str | None
    provider: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    latency_ms: float
    ttfb_ms: float | None
    task_type: str | None
    cost_usd: float | None
    kraken_fee_usd: float | None
    fallback_used: bool
    error_type: str | None
    status: int
    byok: bool
    """The customer's own provider key was used (fee rules differ); absent in old journals."""
    key_id: str | None
    """The public id of the Kraken API key (never its secret or hash): per-key usage."""

    def __new__(cls, ts: float, request_id: str, customer_id: str | None,
                model_requested: str | None, model_dispatched: str | None, provider: str | None,
                prompt_tokens: int | None, completion_tokens: int | None,
                cached_tokens: int | None, reasoning_tokens: int | None, latency_ms: float,
                ttfb_ms: float | None, task_type: str | None, cost_usd: float | None,
                kraken_fee_usd: float | None, fallback_used: bool, error_type: str | None,
                status: int, byok: bool = False, key_id: str | None = None) -> "RequestRecord":
        return _new_tuple(cls, (
            ts, request_id, customer_id, model_requested, model_dispatched, provider,
            prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, latency_ms,
            ttfb_ms, task_type, cost_usd, kraken_fee_usd, fallback_used, error_type, status,
            byok, key_id))

    def __getnewargs__(self) -> tuple:
        return tuple(self)  # pickle and copy rebuild through __new__ with every value

    def __repr__(self) -> str:
        return "RequestRecord(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(FIELD_NAMES, self)) + ")"

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(FIELD_NAMES, self))

    def replace(self, **changes: Any) -> "RequestRecord":
        """A copy with some fields changed (what ``dataclasses.replace`` did)."""
        return RequestRecord(**{**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: dict) -> "RequestRecord":
        # A field with a default that is missing (a journal line from an older Kraken) keeps it.
        return cls(**{name: data.get(name) for name in FIELD_NAMES
                      if name in data or name in REQUIRED_FIELDS})


FIELD_NAMES: tuple[str, ...] = tuple(RequestRecord.__annotations__)
REQUIRED_FIELDS: frozenset[str] = frozenset(FIELD_NAMES[:-2])
"""All but ``byok`` and ``key_id``, which records from older journals may lack."""

for _i, _name in enumerate(FIELD_NAMES):
    setattr(RequestRecord, _name, property(itemgetter(_i), doc=f"The record's {_name}."))
del _i, _name
