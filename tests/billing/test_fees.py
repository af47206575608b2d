"""Fees: a percentage of the provider cost, by key type (managed or BYOK) and plan.

Expected fees are worked out by hand in the comment above each assertion.
"""
from decimal import ROUND_CEILING, Decimal

import pytest

from kraken.billing.fees import DEFAULT_SCHEDULE, FeeError, FeeRule, FeeSchedule, kraken_fee_usd


def test_default_rule_is_five_percent_managed_zero_byok():
    rule = FeeRule()
    assert rule.managed_pct == Decimal("5")
    assert rule.byok_pct == Decimal("0")


def test_managed_key_pays_five_percent():
    # $0.0085 × 5 / 100 = $0.000425
    assert kraken_fee_usd(0.0085, byok=False, plan=None) == 0.000425
    assert DEFAULT_SCHEDULE.fee_decimal(0.0085, byok=False, plan=None) == Decimal("0.000425")


def test_byok_pays_nothing_by_default_but_is_a_known_zero():
    # $0.0085 × 0 / 100 = $0 — a fee of 0.0, not None: the cost was known.
    assert kraken_fee_usd(0.0085, byok=True, plan=None) == 0.0


def test_unknown_cost_has_unknown_fee():
    assert kraken_fee_usd(None, byok=False, plan=None) is None
    assert kraken_fee_usd(None, byok=True, plan="pro") is None
    assert DEFAULT_SCHEDULE.kraken_fee_micro_usd(None, byok=False, plan=None) is None


def test_plan_override_replaces_the_default_rule():
    schedule = FeeSchedule(plans={"pro": FeeRule(managed_pct=Decimal("3"), byok_pct=Decimal("1"))})
    # managed: $0.0085 × 3 / 100 = $0.000255
    assert kraken_fee_usd(0.0085, byok=False, plan="pro", schedule=schedule) == 0.000255
    # BYOK:    $0.0085 × 1 / 100 = $0.000085
    assert kraken_fee_usd(0.0085, byok=True, plan="pro", schedule=schedule) == 0.000085
    # a plan without an override, and no plan, get the default 5%: $0.000425
    assert schedule.kraken_fee_usd(0.0085, byok=False, plan="free") == 0.000425
    assert schedule.kraken_fee_usd(0.0085, byok=False, plan=None) == 0.000425


def test_fee_on_a_decimal_cost_is_exact():
    # $0.00000045 × 5 / 100 = $0.0000000225 (fits the record's 10 decimal places exactly)
    fee = DEFAULT_SCHEDULE.fee_decimal(Decimal("0.00000045"), byok=False, plan=None)
    assert fee == Decimal("0.0000000225")
    assert kraken_fee_usd(Decimal("0.00000045"), byok=False, plan=None) == 0.0000000225
    # The record's float of that cost gives the same fee.
    assert kraken_fee_usd(0.00000045, byok=False, plan=None) == 0.0000000225


def test_fee_rounds_half_even_to_ten_places():
    schedule = FeeSchedule(FeeRule(managed_pct=Decimal("2.5")))
    # $0.000000011 × 2.5 / 100 = $0.000000000275 → at 10 places $0.0000000003
    # (2.75e-10 is nearer 3e-10 than 2e-10)
    assert schedule.kraken_fee_usd(Decimal("0.000000011"), byok=False, plan=None) == 0.0000000003


def test_fee_in_micro_dollars():
    # $1.23 × 5 / 100 = $0.0615 = 61500 µ$
    assert DEFAULT_SCHEDULE.kraken_fee_micro_usd(1.23, byok=False, plan=None) == 61500
    # $0.00001 × 5 / 100 = $0.0000005 = 0.5 µ$ → half-even 0, ceiling 1
    assert DEFAULT_SCHEDULE.kraken_fee_micro_usd(0.00001, byok=False, plan=None) == 0
    schedule = DEFAULT_SCHEDULE
    up = schedule.kraken_fee_micro_usd(0.00001, byok=False, plan=None, rounding=ROUND_CEILING)
    assert up == 1


def test_rule_accepts_config_numbers_and_keeps_them_decimal():
    rule = FeeRule(managed_pct=7.5, byok_pct="1")  # type: ignore[arg-type]
    assert rule.managed_pct == Decimal("7.5")
    assert rule.byok_pct == Decimal("1")
    assert rule.pct(byok=False) == Decimal("7.5")
    assert rule.pct(byok=True) == Decimal("1")


@pytest.mark.parametrize("bad", [-1, 101, "five", True, float("nan")])
def test_rule_rejects_percentages_outside_0_to_100(bad):
    with pytest.raises(FeeError):
        FeeRule(managed_pct=bad)


def test_schedule_from_config_mapping_inherits_unset_plan_fields():
    schedule = FeeSchedule.from_mapping(
        {"managed_pct": 6, "byok_pct": 2, "plans": {"pro": {"managed_pct": 4}}}
    )
    assert schedule.rule_for(None) == FeeRule(managed_pct=Decimal(6), byok_pct=Decimal(2))
    # pro sets managed 4%, inherits BYOK 2%
    assert schedule.rule_for("pro") == FeeRule(managed_pct=Decimal(4), byok_pct=Decimal(2))
    # $0.01 × 4 / 100 = $0.0004 ; $0.01 × 2 / 100 = $0.0002
    assert schedule.kraken_fee_usd(0.01, byok=False, plan="pro") == 0.0004
    assert schedule.kraken_fee_usd(0.01, byok=True, plan="pro") == 0.0002
    assert FeeSchedule.from_mapping(None).rule_for(None) == FeeRule()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"managed_percent": 5}, "fees.managed_percent"),
        ({"plans": {"pro": {"managed_pct": 500}}}, "fees.plans.pro.managed_pct"),
        ({"plans": {"pro": {"fee": 1}}}, "fees.plans.pro.fee"),
        ({"plans": ["pro"]}, "fees.plans"),
    ],
)
def test_schedule_errors_name_the_key(raw, message):
    with pytest.raises(FeeError, match=message.replace(".", r"\.")):
        FeeSchedule.from_mapping(raw)
