"""A call's price: ``cost_usd`` from the provider's usage and the price table, and Kraken's fee.

Run once per priced call, when its record is made (``Gateway.journal``); an unknown price is
null, not 0, and counted per provider and model label."""
from __future__ import annotations

from kraken import metrics
from kraken.billing.fees import FeeSchedule
from kraken.billing.pricing import AnthropicUsage, PriceTable, cost_usd, family_for
from kraken.gateway.call import Call
from kraken.providers.openai_files import BatchUsage


def price_call(call: Call, label: str, prices: PriceTable, fees: FeeSchedule) -> None:
    """Set ``call.cost_usd`` and ``call.fee_usd``. ``label``: the dispatched model's metric label
    value (never free client text)."""
    price = prices.lookup(call.provider_kind, call.model_dispatched or "")
    if price is None:
        metrics.unpriced_for(call.provider, label).inc()
        return
    family = "anthropic" if isinstance(call.usage, AnthropicUsage) else family_for(call.provider_kind)
    call.cost_usd = cost_usd(price, call.usage, family=family)
    if isinstance(call.usage, BatchUsage) and call.cost_usd is not None:
        call.cost_usd = round(call.cost_usd * call.usage.price_factor, 10)
    call.fee_usd = fees.kraken_fee_usd(call.cost_usd, byok=call.byok, plan=call.plan)
    if call.cost_usd:
        metrics.cost_for(call.provider, label).inc(call.cost_usd)
