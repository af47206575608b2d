"""The one metadata record per request, with exactly the fields Kraken's policy names.

No field can hold prompt or response text: every value is a number, a flag, an enum-like
label or an identifier chosen by Kraken or the operator.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RequestRecord":
        return cls(**{name: data.get(name) for name in FIELD_NAMES})


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
