"""Billing: per-token prices, the cost of a request, and Kraken's fee on it.

``pricing`` turns (provider kind, model, usage) into an exact USD cost, ``fees`` turns a cost into
Kraken's fee. Both answer None, never 0, when the input is unknown.
"""
from kraken.billing.fees import DEFAULT_SCHEDULE, FeeError, FeeRule, FeeSchedule, kraken_fee_usd
from kraken.billing.pricing import (
    AnthropicUsage,
    Family,
    Price,
    PriceTable,
    PricingError,
    cost_decimal,
    cost_micro_usd,
    cost_usd,
    family_for,
)

__all__ = [
    "AnthropicUsage",
    "DEFAULT_SCHEDULE",
    "Family",
    "FeeError",
    "FeeRule",
    "FeeSchedule",
    "Price",
    "PriceTable",
    "PricingError",
    "cost_decimal",
    "cost_micro_usd",
    "cost_usd",
    "family_for",
    "kraken_fee_usd",
]
