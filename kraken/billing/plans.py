"""Plans (tiers): rate-limit defaults, allowed models, monthly caps, prepaid or postpaid, fees.

Configured as ``[plans.<name>]`` tables; ``[plans] default = "<name>"`` names the plan of a
customer whose ``customers.plan`` is unknown here. With no plans configured there is one
built-in ``default`` plan with no limits and postpaid billing, so Kraken behaves as before.
Zero means "no limit" for every number, like the rest of the config.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from kraken.billing.fees import FeeError, FeeRule, FeeSchedule, _pct

__all__ = ["DEFAULT_PLAN", "Plan", "PlanBook", "PlanError"]

DEFAULT_PLAN = "default"
"""The plan name ``customers.plan`` defaults to (kraken/store/schema.py, migration 2)."""


class PlanError(ValueError):
    """A malformed ``[plans]`` section; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one tier allows. Every number 0 means unlimited."""

    name: str
    rpm: int = 0
    """Requests per minute per key, when the key sets none."""
    tpm: int = 0
    """Tokens per minute per key, when the key sets none."""
    max_concurrent: int = 0
    """Requests in flight per key, when the key sets none."""
    allowed_models: tuple[str, ...] = ()
    """Public model names (or aliases) the plan may request; empty means all."""
    monthly_token_cap: int = 0
    """Prompt + completion tokens per calendar month (UTC); over it requests get 429."""
    monthly_spend_cap_usd: float = 0.0
    """Cost + Kraken fee per calendar month (UTC); over it requests get 402."""
    prepaid: bool = False
    """Requests need a positive wallet balance (402 ``insufficient_balance`` otherwise)."""
    fee_percent: float | None = None
    """Kraken fee on managed-key requests; None: the ``[fees]`` rule."""
    byok_fee_percent: float | None = None
    """Kraken fee on BYOK requests; None: the ``[fees]`` rule."""

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models

    @property
    def monthly_spend_cap_micros(self) -> int:
        return round(Decimal(repr(self.monthly_spend_cap_usd)) * 1_000_000)


_INTS = ("rpm", "tpm", "max_concurrent", "monthly_token_cap")
_KEYS = frozenset(f.name for f in fields(Plan)) - {"name"}


def _plan(name: str, raw: Any, where: str) -> Plan:
    if not isinstance(raw, Mapping):
        raise PlanError(f"[{where}] must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise PlanError(f"unknown key {where}.{unknown[0]} (known: {', '.join(sorted(_KEYS))})")
    values: dict[str, Any] = {}
    for key in _INTS:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlanError(f"{where}.{key} must be a non-negative integer")
            values[key] = value
    if "monthly_spend_cap_usd" in raw:
        value = raw["monthly_spend_cap_usd"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise PlanError(f"{where}.monthly_spend_cap_usd must be a non-negative number of USD")
        values["monthly_spend_cap_usd"] = float(value)
    if "prepaid" in raw:
        if not isinstance(raw["prepaid"], bool):
            raise PlanError(f"{where}.prepaid must be true or false")
        values["prepaid"] = raw["prepaid"]
    if "allowed_models" in raw:
        models = raw["allowed_models"]
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise PlanError(f"{where}.allowed_models must be a list of model names")
        values["allowed_models"] = tuple(models)
    for key in ("fee_percent", "byok_fee_percent"):
        if key in raw:
            try:
                values[key] = float(_pct(raw[key], f"{where}.{key}"))
            except FeeError as exc:
                raise PlanError(str(exc)) from None
    return Plan(name=name, **values)


class PlanBook:
    """Every configured plan, and the one a customer gets when theirs is unknown."""

    __slots__ = ("default", "plans")

    def __init__(self, plans: Mapping[str, Plan] | None = None, default: str = DEFAULT_PLAN):
        self.plans: dict[str, Plan] = dict(plans or {})
        self.plans.setdefault(default, Plan(default))
        self.default = self.plans[default]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, *, where: str = "plans") -> PlanBook:
        """From config: ``{default = "free", free = {...}, pro = {...}}``."""
        raw = raw or {}
        if not isinstance(raw, Mapping):
            raise PlanError(f"[{where}] must be a table")
        default = raw.get("default", DEFAULT_PLAN)
        if not isinstance(default, str) or not default:
            raise PlanError(f"{where}.default must be a plan name")
        plans = {str(name): _plan(str(name), body, f"{where}.{name}")
                 for name, body in raw.items() if name != "default"}
        if "default" in raw and default not in plans:
            raise PlanError(f"{where}.default names {default!r}, which is not a [{where}.<name>] table")
        return cls(plans, default)

    def get(self, name: str | None) -> Plan:
        """The named plan; an unknown or missing name falls back to the default plan."""
        if name is None:
            return self.default
        return self.plans.get(name, self.default)

    def fee_schedule(self, base: FeeSchedule) -> FeeSchedule:
        """``base`` with each plan's fee_percent / byok_fee_percent as a plan rule.

        A plan's own percentages win over ``[fees.plans.<name>]``; what a plan leaves unset
        comes from there, then from the ``[fees]`` default.
        """
        rules = dict(base.plans)
        for plan in self.plans.values():
            if plan.fee_percent is None and plan.byok_fee_percent is None:
                continue
            inherited = base.rule_for(plan.name)
            rules[plan.name] = FeeRule(
                managed_pct=inherited.managed_pct if plan.fee_percent is None
                else Decimal(repr(plan.fee_percent)),
                byok_pct=inherited.byok_pct if plan.byok_fee_percent is None
                else Decimal(repr(plan.byok_fee_percent)),
            )
        return FeeSchedule(base.default, rules)
