"""The one metadata record per request, with exactly the fields Kraken's policy names.

No field can hold prompt or response text: every value is a number, a flag, an enum-like
label or an identifier chosen by Kraken or the operator.

A named tuple of the values in ``FIELD_NAMES`` order: one is built per request on the hot path,
and a frozen dataclass paid ``object.__setattr__`` per field (~3.6 us for the 20 here, ~0.9 us as
a tuple). The tuple is also the store's row as it is.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class RequestRecord(NamedTuple):
    """Immutable, like the frozen dataclass it replaces: same fields, keywords and defaults."""

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
    byok: bool = False
    """The customer's own provider key was used (fee rules differ); absent in old journals."""
    key_id: str | None = None
    """The public id of the Kraken API key (never its secret or hash): per-key usage."""

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    def replace(self, **changes: Any) -> "RequestRecord":
        """A copy with some fields changed (what ``dataclasses.replace`` did)."""
        return self._replace(**changes)

    @classmethod
    def from_dict(cls, data: dict) -> "RequestRecord":
        # A field with a default that is missing (a journal line from an older Kraken) keeps it.
        return cls(**{name: data.get(name) for name in FIELD_NAMES
                      if name in data or name in REQUIRED_FIELDS})


FIELD_NAMES: tuple[str, ...] = RequestRecord._fields
REQUIRED_FIELDS: frozenset[str] = frozenset(FIELD_NAMES) - set(RequestRecord._field_defaults)
"""All but ``byok`` and ``key_id``, which records from older journals may lack."""
