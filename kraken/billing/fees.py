"""Kraken's fee on top of the provider cost: a percentage, by key type and plan.

Managed keys (Kraken pays the provider) carry ``managed_pct``; BYOK requests (the customer's own
provider key) carry ``byok_pct``. A plan may override either. Arithmetic is Decimal, like
``pricing``, and the fee is None exactly when the cost is None.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Mapping

__all__ = ["FeeError", "FeeRule", "FeeSchedule", "DEFAULT_SCHEDULE", "kraken_fee_usd"]

_HUNDRED = Decimal(100)
_USD_PLACES = Decimal("1e-10")
_MICRO = Decimal("1e-6")


class FeeError(ValueError):
    """A malformed fee rule; the message names the offending key."""


def _pct(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise FeeError(f"{where} must be a percentage (5 means 5%), not {value!r}")
    try:
        pct = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise FeeError(f"{where} must be a percentage (5 means 5%), not {value!r}") from None
    # Above 100% is far likelier a typo (0.05 meant as 5 → 500?) than a price: refuse it.
    if not pct.is_finite() or not 0 <= pct <= 100:
        raise FeeError(f"{where} must be between 0 and 100 (percent), not {value!r}")
    return pct


@dataclass(frozen=True, slots=True)
class FeeRule:
    """Fee percentages (5 means 5%) of the provider cost."""

    managed_pct: Decimal = Decimal("5")
    """Requests on a Kraken-managed provider key."""
    byok_pct: Decimal = Decimal("0")
    """Requests on the customer's own provider key."""

    def __post_init__(self) -> None:
        # Accept 5, 5.0 or "5" from config; keep Decimal so 5% of a cost is exact.
        object.__setattr__(self, "managed_pct", _pct(self.managed_pct, "managed_pct"))
        object.__setattr__(self, "byok_pct", _pct(self.byok_pct, "byok_pct"))

    def pct(self, *, byok: bool) -> Decimal:
        return self.byok_pct if byok else self.managed_pct


def _as_decimal(cost: float | Decimal) -> Decimal:
    if isinstance(cost, Decimal):
        return cost
    if isinstance(cost, bool) or not isinstance(cost, (int, float)):
        raise TypeError(f"cost must be a number of USD, not {cost!r}")
    # repr of the record's float (already rounded to 10 places) gives back that decimal exactly.
    value = Decimal(repr(cost)) if isinstance(cost, float) else Decimal(cost)
    if not value.is_finite():
        raise ValueError(f"cost must be finite, not {cost!r}")
    return value


class FeeSchedule:
    """The default rule plus per-plan overrides (plan name → FeeRule)."""

    __slots__ = ("default", "plans")

    def __init__(self, default: FeeRule | None = None, plans: Mapping[str, FeeRule] | None = None):
        self.default = default if default is not None else FeeRule()
        self.plans: dict[str, FeeRule] = dict(plans or {})

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, *, where: str = "fees") -> FeeSchedule:
        """From config: ``{managed_pct, byok_pct, plans: {name: {managed_pct?, byok_pct?}}}``.

        A plan that sets one percentage inherits the other from the default rule.
        """
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise FeeError(f"[{where}] must be a table")
        unknown = set(raw) - {"managed_pct", "byok_pct", "plans"}
        if unknown:
            raise FeeError(f"unknown key {where}.{sorted(unknown)[0]}")
        base = FeeRule()
        default = FeeRule(
            managed_pct=_pct(raw.get("managed_pct", base.managed_pct), f"{where}.managed_pct"),
            byok_pct=_pct(raw.get("byok_pct", base.byok_pct), f"{where}.byok_pct"),
        )
        plans_raw = raw.get("plans") or {}
        if not isinstance(plans_raw, Mapping):
            raise FeeError(f"{where}.plans must be a table of plan names")
        plans = {}
        for name, rule in plans_raw.items():
            at = f"{where}.plans.{name}"
            if not isinstance(rule, Mapping):
                raise FeeError(f"{at} must be a table")
            unknown = set(rule) - {"managed_pct", "byok_pct"}
            if unknown:
                raise FeeError(f"unknown key {at}.{sorted(unknown)[0]}")
            plans[str(name)] = FeeRule(
                managed_pct=_pct(rule.get("managed_pct", default.managed_pct), f"{at}.managed_pct"),
                byok_pct=_pct(rule.get("byok_pct", default.byok_pct), f"{at}.byok_pct"),
            )
        return cls(default, plans)

    def rule_for(self, plan: str | None) -> FeeRule:
        """The plan's rule; no plan, or one without an override, gets the default."""
        if plan is None:
            return self.default
        return self.plans.get(plan, self.default)

    def fee_decimal(
        self, cost: float | Decimal | None, *, byok: bool, plan: str | None
    ) -> Decimal | None:
        """The exact fee in USD, or None when the cost is unknown."""
        if cost is None:
            return None
        return _as_decimal(cost) * self.rule_for(plan).pct(byok=byok) / _HUNDRED

    def kraken_fee_usd(
        self, cost_usd: float | Decimal | None, *, byok: bool, plan: str | None
    ) -> float | None:
        """The fee for the record: rounded half-even to 10 decimal places, None if cost is."""
        fee = self.fee_decimal(cost_usd, byok=byok, plan=plan)
        if fee is None:
            return None
        return float(fee.quantize(_USD_PLACES, rounding=ROUND_HALF_EVEN))

    def kraken_fee_micro_usd(
        self,
        cost_usd: float | Decimal | None,
        *,
        byok: bool,
        plan: str | None,
        rounding: str = ROUND_HALF_EVEN,
    ) -> int | None:
        """The fee in whole micro-dollars (1e-6 USD), rounded with ``rounding``."""
        fee = self.fee_decimal(cost_usd, byok=byok, plan=plan)
        if fee is None:
            return None
        return int((fee / _MICRO).quantize(Decimal(1), rounding=rounding))


DEFAULT_SCHEDULE = FeeSchedule()
"""5% on managed keys, 0% on BYOK, no plan overrides."""


def kraken_fee_usd(
    cost_usd: float | Decimal | None,
    *,
    byok: bool,
    plan: str | None,
    schedule: FeeSchedule = DEFAULT_SCHEDULE,
) -> float | None:
    """Kraken's fee on one request's provider cost; None when the cost is None."""
    return schedule.kraken_fee_usd(cost_usd, byok=byok, plan=plan)
