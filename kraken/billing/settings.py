"""``[prices]``, ``[plans]`` and ``[fees]``: sections of the config file that billing owns.

kraken/config reads them as plain tables (it sits below billing and cannot import it); they are
parsed once, here, when the process starts, and a bad value is a ``ConfigError`` naming the key
and the file like every other config error.
"""
from __future__ import annotations

from dataclasses import dataclass

from kraken.billing.fees import FeeError, FeeSchedule
from kraken.billing.plans import PlanBook, PlanError
from kraken.billing.pricing import PriceTable, PricingError
from kraken.config import Config, ConfigError

__all__ = ["BillingSettings", "billing_settings"]


@dataclass(frozen=True, slots=True)
class BillingSettings:
    """The parsed billing sections, shared by the router, the gateway and the billing guard."""

    prices: PriceTable
    plans: PlanBook
    fees: FeeSchedule
    """The ``[fees]`` schedule with each plan's fee overrides applied."""


def billing_settings(cfg: Config) -> BillingSettings:
    """Parse the three sections of ``cfg`` (errors name ``cfg.source`` and the key)."""
    try:
        prices = PriceTable.load(cfg.prices)
    except PricingError as exc:
        raise ConfigError(f"{cfg.source}: prices: {exc}") from None
    try:
        plans = PlanBook.from_mapping(cfg.plans)
    except PlanError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from None
    try:
        fees = FeeSchedule.from_mapping(cfg.fees)
    except FeeError as exc:
        raise ConfigError(f"{cfg.source}: {exc}") from None
    return BillingSettings(prices, plans, plans.fee_schedule(fees))
