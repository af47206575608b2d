"""Who a request acts for, as the key store hands it to the verifier: below both the accounts
that store keys and the policy that checks them, so neither imports the other's layer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request acts for."""

    key_id: str
    customer_id: str
    rpm: int = 0
    tpm: int = 0
    max_concurrent: int = 0
    allowed_models: frozenset[str] | None = None
    """Public model names this key may call; None = every model."""
    plan: str | None = None
    """The customer's plan from its account row; None (config-file keys): the billing guard
    looks the customer up in its snapshot, else the default plan."""
    opted_out: bool = False
    """The customer objected to routing-statistics use of its metadata."""
    token_budget: int | None = None
    spend_budget_usd: float | None = None


class KeyRow(NamedTuple):
    """What a ``KeySource`` returns for a usable key."""

    hash: str
    principal: Principal
    expires_at: float | None


class KeySource(Protocol):
    async def fetch(self, key_id: str) -> KeyRow | None:
        """The key row if the key exists and is neither revoked nor expired, else None."""
