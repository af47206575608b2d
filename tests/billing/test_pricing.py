"""Pricing: every expected cost is worked out by hand in the comment above its assertion.

Rates are USD per million tokens, so cost = Σ tokens × rate / 1,000,000.
"""
from decimal import ROUND_CEILING, Decimal

import pytest

from kraken.billing.pricing import (
    AnthropicUsage,
    Price,
    PriceTable,
    PricingError,
    cost_decimal,
    cost_micro_usd,
    cost_usd,
    family_for,
)
from kraken.config import MOCK_KINDS, PROVIDER_PRESETS
from kraken.providers.usage import Usage


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.load()


# --- OpenAI family ------------------------------------------------------------------------------


def test_openai_prompt_caching_prices_cached_part_at_cached_input(table):
    price = table.lookup("openai", "gpt-4o")  # input 2.50, cached_input 1.25, output 10.00
    usage = Usage.from_openai(
        {
            "prompt_tokens": 2000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 1200},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
    )
    # uncached 2000 - 1200 = 800 × 2.50 = 2000
    # cached          1200 × 1.25 = 1500
    # output           500 × 10.00 = 5000
    # 8500 / 1e6 = $0.0085
    assert cost_decimal(price, usage, family="openai") == Decimal("0.0085")
    assert cost_usd(price, usage, family="openai") == 0.0085


def test_o_series_reasoning_is_part_of_completion_not_added_to_it(table):
    price = table.lookup("openai", "o4-mini")  # input 1.10, cached_input 0.275, output 4.40
    usage = Usage(
        prompt_tokens=1000, completion_tokens=3000, cached_tokens=400, reasoning_tokens=2500
    )
    # uncached 1000 - 400 = 600 × 1.10  =   660
    # cached           400 × 0.275 =   110
    # visible 3000 - 2500 = 500 × 4.40  =  2200
    # reasoning       2500 × 4.40  = 11000   (reasoning rate defaults to output)
    # 13970 / 1e6 = $0.01397
    assert cost_decimal(price, usage, family="openai") == Decimal("0.01397")
    assert cost_usd(price, usage, family="openai") == 0.01397


def test_reasoning_rate_applies_when_a_model_sets_one():
    table = PriceTable.load({"openai": {"o4-mini": {"reasoning": "8.80"}}})
    price = table.lookup("openai", "o4-mini")
    usage = Usage(
        prompt_tokens=1000, completion_tokens=3000, cached_tokens=0, reasoning_tokens=2500
    )
    # input      1000 × 1.10 =  1100
    # visible     500 × 4.40 =  2200
    # reasoning  2500 × 8.80 = 22000
    # 25300 / 1e6 = $0.0253
    assert cost_decimal(price, usage, family="openai") == Decimal("0.0253")


def test_deepseek_cache_hit_and_miss(table):
    price = table.lookup("deepseek", "deepseek-chat")  # miss 0.28, hit 0.028, output 0.42
    usage = Usage(prompt_tokens=10_000, completion_tokens=1000, cached_tokens=8000)
    # miss 2000 × 0.28  = 560
    # hit  8000 × 0.028 = 224
    # out  1000 × 0.42  = 420
    # 1204 / 1e6 = $0.001204
    assert cost_decimal(price, usage, family="openai") == Decimal("0.001204")


def test_xai_reasoning_is_counted_beside_completion(table):
    price = table.lookup("xai", "grok-3-mini")  # input 0.30, cached 0.075, output 0.50
    # xAI: total = prompt + completion + reasoning (100 + 10 + 300)
    usage = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=0, reasoning_tokens=300)
    # input       100 × 0.30 =  30
    # completion   10 × 0.50 =   5
    # reasoning   300 × 0.50 = 150
    # 185 / 1e6 = $0.000185
    assert cost_decimal(price, usage, family="xai") == Decimal("0.000185")
    # Read with OpenAI's subset rule the 300 reasoning tokens would be capped to the 10.
    assert cost_decimal(price, usage, family="openai") == Decimal("0.000035")
    assert family_for("xai") == "xai"
    assert family_for("anthropic") == "anthropic"
    assert family_for("deepseek") == "openai"


def test_cached_and_reasoning_counts_are_capped_at_their_totals(table):
    price = table.lookup("openai", "gpt-4o-mini")  # 0.15 / 0.075 / 0.60
    usage = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=500, reasoning_tokens=50)
    # cached capped to 100 × 0.075 = 7.5; completion 10 × 0.60 = 6 → 13.5 / 1e6
    assert cost_decimal(price, usage, family="openai") == Decimal("0.0000135")


def test_missing_usage_is_unknown_cost_not_zero(table):
    price = table.lookup("openai", "gpt-4o")
    assert cost_usd(price, Usage(), family="openai") is None
    assert cost_usd(price, Usage(completion_tokens=10), family="openai") is None
    # A prompt count without a completion count (nothing generated) is priced.
    # 1000 × 2.50 = 2500 / 1e6
    assert cost_usd(price, Usage(prompt_tokens=1000), family="openai") == 0.0025


# --- Anthropic ----------------------------------------------------------------------------------


def test_anthropic_cache_read_and_creation(table):
    price = table.lookup("anthropic", "claude-sonnet-4-5")
    usage = AnthropicUsage.from_anthropic(
        {
            "input_tokens": 1000,
            "cache_read_input_tokens": 20_000,
            "cache_creation_input_tokens": 3000,
            "output_tokens": 800,
        }
    )
    # input         1000 × 3.00 =  3000
    # cache read   20000 × 0.30 =  6000
    # cache write   3000 × 3.75 = 11250   (5-minute writes, 1.25 × input)
    # output         800 × 15.00 = 12000
    # 32250 / 1e6 = $0.03225
    assert cost_decimal(price, usage, family="anthropic") == Decimal("0.03225")
    assert cost_usd(price, usage, family="anthropic") == 0.03225
    # The record's normalised counts follow OpenAI's meaning: cached ⊂ prompt.
    counts = (usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens)
    assert counts == (24_000, 20_000, 800)
    assert usage.reasoning_tokens is None


def test_anthropic_one_hour_cache_writes(table):
    price = table.lookup("anthropic", "claude-sonnet-4-5")
    usage = AnthropicUsage.from_anthropic(
        {
            "input_tokens": 1000,
            "cache_read_input_tokens": 20_000,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 2000,
                "ephemeral_1h_input_tokens": 1000,
            },
            "output_tokens": 800,
        }
    )
    # input 1000 × 3.00 = 3000; read 20000 × 0.30 = 6000
    # 5m write 2000 × 3.75 = 7500; 1h write 1000 × 6.00 = 6000
    # output 800 × 15.00 = 12000
    # 34500 / 1e6 = $0.0345
    assert cost_decimal(price, usage, family="anthropic") == Decimal("0.0345")


def test_anthropic_usage_needs_its_family(table):
    price = table.lookup("anthropic", "claude-haiku-4-5")
    with pytest.raises(TypeError):
        cost_usd(price, Usage(prompt_tokens=1, completion_tokens=1), family="anthropic")
    with pytest.raises(TypeError):
        cost_usd(price, AnthropicUsage(input_tokens=1), family="openai")
    with pytest.raises(ValueError):
        cost_usd(price, Usage(prompt_tokens=1), family="gemini")  # type: ignore[arg-type]
    assert cost_usd(price, AnthropicUsage(output_tokens=5), family="anthropic") is None


# --- long-context tiers -------------------------------------------------------------------------


def test_long_context_tier_prices_the_whole_request(table):
    price = table.lookup("gemini", "gemini-2.5-pro")  # ≤200k: 1.25 / 10; >200k: 2.50 / 15
    short = Usage(prompt_tokens=200_000, completion_tokens=1000)
    long = Usage(prompt_tokens=200_001, completion_tokens=1000)
    # 200000 × 1.25 = 250000; 1000 × 10 = 10000 → 260000 / 1e6 = $0.26
    assert cost_decimal(price, short, family="openai") == Decimal("0.26")
    # 200001 × 2.50 = 500002.5; 1000 × 15 = 15000 → 515002.5 / 1e6 = $0.5150025
    assert cost_decimal(price, long, family="openai") == Decimal("0.5150025")


def test_anthropic_long_context_counts_cache_reads_and_writes_in_the_prompt(table):
    price = table.lookup("anthropic", "claude-sonnet-4-5")
    usage = AnthropicUsage(
        input_tokens=1000,
        cache_read_input_tokens=150_000,
        cache_creation_input_tokens=50_000,
        output_tokens=100,
    )
    # prompt = 1000 + 150000 + 50000 = 201000 > 200000 → long tier
    # 1000 × 6.00 = 6000; 150000 × 0.60 = 90000; 50000 × 7.50 = 375000; 100 × 22.50 = 2250
    # 473250 / 1e6 = $0.47325
    assert cost_decimal(price, usage, family="anthropic") == Decimal("0.47325")


# --- lookup -------------------------------------------------------------------------------------


def test_unknown_model_or_provider_has_no_price(table):
    assert table.lookup("openai", "gpt-9-imaginary") is None
    assert table.lookup("nonesuch", "gpt-4o") is None
    assert table.lookup("openai_compatible", "llama-3.3-70b") is None
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    assert cost_usd(None, usage, family="openai") is None
    assert cost_micro_usd(None, usage, family="openai") is None


@pytest.mark.parametrize(
    ("provider", "model", "listed"),
    [
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # not gpt-4o: longest prefix wins
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("openai", "o3-2025-04-16", "o3"),
        ("openai", "GPT-4o-Mini", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic", "claude-opus-4-20250514", "claude-opus-4"),
        ("anthropic", "claude-haiku-4-5@20251001", "claude-haiku-4-5"),
        ("gemini", "gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("xai", "grok-4-0709", "grok-4"),
    ],
)
def test_dated_snapshot_matches_longest_listed_prefix(table, provider, model, listed):
    assert table.lookup(provider, model) == table.lookup(provider, listed)
    assert table.lookup(provider, model) is not None


def test_an_exact_snapshot_entry_beats_the_prefix(table):
    # gpt-4o-2024-05-13 kept its launch price of $5 / $15.
    assert table.lookup("openai", "gpt-4o-2024-05-13").input == Decimal("5.00")
    assert table.lookup("openai", "gpt-4o").input == Decimal("2.50")


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o-realtime-preview"),  # priced differently from gpt-4o
        ("openai", "gpt-4o-mini-search-preview-2025-03-11"),
        ("anthropic", "claude-opus-4-9"),  # "-9" is a version, not a snapshot of claude-opus-4
        ("mistral", "mistral-large-latest"),  # the alias moved between differently priced versions
        ("gemini", "gemini-2.5-flash-preview-05-20"),
    ],
)
def test_a_variant_is_not_mistaken_for_a_snapshot(table, provider, model):
    assert table.lookup(provider, model) is None


# --- overrides ----------------------------------------------------------------------------------


def test_operator_override_wins_and_merges_over_shipped_fields():
    table = PriceTable.load(
        {
            "openai": {"gpt-4o": {"input": "2.00"}},
            "openai_compatible": {"llama-local": {"input": 0, "output": 0}},
        }
    )
    price = table.lookup("openai", "gpt-4o")
    assert price.input == Decimal("2.00")
    assert price.output == Decimal("10.00")  # kept from the shipped list
    assert price.cached_input == Decimal("1.25")
    # The override also applies to snapshots through the prefix rule.
    assert table.lookup("openai", "gpt-4o-2024-11-20").input == Decimal("2.00")
    # A known zero price is a price: cost 0.0, not None.
    local = table.lookup("openai_compatible", "llama-local")
    assert cost_usd(local, Usage(prompt_tokens=10, completion_tokens=5), family="openai") == 0.0
    # The shipped table itself is unchanged.
    assert PriceTable.load().lookup("openai", "gpt-4o").input == Decimal("2.50")


def test_override_float_is_read_as_its_decimal_text():
    table = PriceTable.load({"openai": {"gpt-4o-mini": {"input": 0.15}}})
    assert table.lookup("openai", "gpt-4o-mini").input == Decimal("0.15")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"openai": {"gpt-4o": {"inptu": 1}}}, "openai.gpt-4o.inptu"),
        ({"openai": {"gpt-4o": {"input": -1}}}, "openai.gpt-4o.input"),
        ({"openai": {"gpt-4o": {"input": "cheap"}}}, "openai.gpt-4o.input"),
        ({"openai": {"gpt-4o": {"input": True}}}, "openai.gpt-4o.input"),
        ({"openai": {"brand-new": {"input": 1}}}, "openai.brand-new.output is missing"),
        ({"openai": {"gpt-4o": {"long_context": {"input": 1, "output": 1}}}}, "above"),
        ({"openai": {"gpt-4o": 3}}, "openai.gpt-4o"),
    ],
)
def test_bad_override_names_the_key(overrides, message):
    with pytest.raises(PricingError, match=message.replace(".", r"\.")):
        PriceTable.load(overrides)


# --- exactness ----------------------------------------------------------------------------------


def test_no_float_drift_three_tokens_at_fifteen_cents_per_million(table):
    price = table.lookup("openai", "gpt-4o-mini")  # input 0.15
    usage = Usage(prompt_tokens=3, completion_tokens=0)
    # 3 × 0.15 = 0.45 / 1e6 = $0.00000045 exactly
    # (in floats 3 * 0.15 is already 0.44999999999999996)
    assert 3 * 0.15 != 0.45
    assert cost_decimal(price, usage, family="openai") == Decimal("0.00000045")
    assert cost_usd(price, usage, family="openai") == 0.00000045
    # 0.45 micro-dollars: half-even rounds to 0, a ledger that never under-charges rounds up.
    assert cost_micro_usd(price, usage, family="openai") == 0
    assert cost_micro_usd(price, usage, family="openai", rounding=ROUND_CEILING) == 1


def test_sums_of_exact_costs_stay_exact(table):
    price = table.lookup("openai", "gpt-4o-mini")  # cached_input 0.075
    usage = Usage(prompt_tokens=7, completion_tokens=0, cached_tokens=7)
    # 7 × 0.075 = 0.525 / 1e6 = $0.000000525 per request; × 1000 requests = $0.000525
    one = cost_decimal(price, usage, family="openai")
    assert one == Decimal("0.000000525")
    assert sum([one] * 1000) == Decimal("0.000525")
    assert cost_usd(price, usage, family="openai") == 0.000000525
    # The same in floats drifts: 7 * 0.075 / 1e6 == 5.250000000000001e-07, and a thousand of
    # them sum to 0.0005250000000000137.
    assert 7 * 0.075 / 1e6 != 0.000000525
    assert sum([7 * 0.075 / 1e6] * 1000) != 0.000525


def test_cost_usd_rounds_to_ten_places():
    price = Price(
        input=Decimal("0.00003"),
        output=Decimal(0),
        cached_input=Decimal(0),
        reasoning=Decimal(0),
        cache_write=Decimal(0),
        cache_write_1h=Decimal(0),
    )
    # 5 × 0.00003 = 0.00015 / 1e6 = 1.5e-10 → half-even at 10 places → 2e-10
    assert cost_decimal(price, Usage(prompt_tokens=5), family="openai") == Decimal("1.5E-10")
    assert cost_usd(price, Usage(prompt_tokens=5), family="openai") == 2e-10


def test_micro_usd_of_a_larger_cost(table):
    price = table.lookup("openai", "gpt-4o")
    usage = Usage(prompt_tokens=2000, completion_tokens=500, cached_tokens=1200)
    # $0.0085 (see the prompt-caching test) = 8500 micro-dollars
    assert cost_micro_usd(price, usage, family="openai") == 8500


# --- the shipped list ---------------------------------------------------------------------------


def test_every_real_provider_kind_has_prices(table):
    # self-hosted kinds have no list price; OpenRouter's is per routed model (it reports its own)
    unpriced = {"openai_compatible", "ollama", "vllm", "openrouter"}
    kinds = set(PROVIDER_PRESETS) - set(MOCK_KINDS) - unpriced
    assert kinds <= set(table.provider_kinds)
    assert "anthropic" in table.provider_kinds


def test_shipped_prices_are_consistent(table):
    for kind in table.provider_kinds:
        for model in table.models(kind):
            price = table.lookup(kind, model)
            for tier in filter(None, (price, price.long_context)):
                assert tier.input > 0 and tier.output > 0, (kind, model)
                assert tier.cached_input <= tier.input, (kind, model)
                if kind == "anthropic" and model != "claude-3-haiku":
                    # 5-minute writes 1.25 × input, 1-hour writes 2 × input, reads 0.1 × input
                    # (Claude 3 Haiku predates the rule: $0.30 writes, $0.03 reads on $0.25.)
                    assert tier.cache_write == tier.input * Decimal("1.25"), model
                    assert tier.cache_write_1h == tier.input * 2, model
                    assert tier.cached_input == tier.input / 10, model
