"""The one metadata record per request, with exactly the fields Kraken's policy names.

No field can hold prompt or response text: every value is a number, a flag, an enum-like
label or an identifier chosen by Kraken or the operator.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields


@dataclass(frozen=True, slots=True)
class RequestRecord:
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RequestRecord":
        # A field with a default that is missing (a journal line from an older Kraken) keeps it.
        return cls(**{name: data.get(name) for name in FIELD_NAMES
                      if name in data or name in REQUIRED_FIELDS})


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
REQUIRED_FIELDS: frozenset[str] = frozenset(
    f.name for f in fields(RequestRecord) if f.default is MISSING)
