"""Per-token prices and the exact cost of one request.

Prices are USD per million tokens. They stay ``Decimal`` from the TOML text (parsed with
``parse_float=Decimal``) to the result, so a cost is exact: 7 tokens at $0.075/M is
$0.000000525, not ``7 * 0.075 / 1e6 == 5.250000000000001e-07``, and sums of costs stay exact.
A float appears only at the record boundary, after rounding to 10 decimal places.

An unknown price is ``None`` all the way through, never 0: a zero cost would hide the missing
price (the caller counts a warning metric instead).
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol

from kraken.providers.usage import AnthropicUsage

__all__ = [
    "AnthropicUsage",
    "Family",
    "Price",
    "PriceTable",
    "PricingError",
    "cost_decimal",
    "cost_micro_usd",
    "cost_usd",
    "family_for",
]

Family = Literal["openai", "xai", "anthropic"]
"""How a provider reports usage (see ``cost_decimal``)."""

_MILLION = Decimal(1_000_000)
_USD_PLACES = Decimal("1e-10")
_MICRO = Decimal("1e-6")
# 50 digits: tokens (≤ 1e12) × price (≤ 1e6, ≤ 10 decimals) stays exact with room to spare,
# whatever the thread's default context says.
_CONTEXT = Context(prec=50, rounding=ROUND_HALF_EVEN)

_FIELDS = ("input", "output", "cached_input", "reasoning", "cache_write", "cache_write_1h")
_LONG_KEYS = frozenset(_FIELDS) | {"above"}
_KEYS = frozenset(_FIELDS) | {"long_context"}

# What may follow a listed name for a dated snapshot or alias of the same model: an OpenAI date
# (-2024-07-18), an Anthropic date (-20250929), an xAI/Mistral/Gemini version (-0709, -2411,
# -001), -latest, or a Vertex-style @version. Anything else (-mini, -pro, -realtime-preview, a
# bare -1) is a different model with its own price, so it must be listed to be known.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{3,4}|-latest|@[0-9a-z.\-]+")

_LOOKUP_CACHE_SIZE = 4096

SAME_PRICES_AS = {"azure_openai": "openai"}
"""Provider kinds that bill a model name at another kind's price (Azure OpenAI's prices equal
OpenAI's for the same model names); a model listed under the kind itself wins."""


class PricingError(ValueError):
    """A malformed price list or override; the message names the offending key."""


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model."""

    input: Decimal
    """Uncached prompt tokens."""
    output: Decimal
    """Completion tokens (visible text and tool calls)."""
    cached_input: Decimal
    """Prompt tokens read from the provider's prompt cache."""
    reasoning: Decimal
    """Reasoning/thinking tokens; equal to ``output`` for every provider today."""
    cache_write: Decimal
    """Prompt tokens written to a 5-minute cache (Anthropic: 1.25 × input)."""
    cache_write_1h: Decimal
    """Prompt tokens written to a 1-hour cache (Anthropic: 2 × input)."""
    long_context_above: int | None = None
    """When set, a prompt longer than this many tokens is priced entirely at ``long_context``."""
    long_context: Price | None = None

    def for_prompt(self, prompt_tokens: int) -> Price:
        """The tier that prices a request whose prompt (cached or not) has this many tokens."""
        if (
            self.long_context is not None
            and self.long_context_above is not None
            and prompt_tokens > self.long_context_above
        ):
            return self.long_context
        return self


class _OpenAIStyleUsage(Protocol):
    """``kraken.providers.usage.Usage`` as this module reads it (billing sits below providers)."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def cached_tokens(self) -> int | None: ...
    @property
    def reasoning_tokens(self) -> int | None: ...


def family_for(provider_kind: str) -> Family:
    """The usage convention of a provider kind (``ProviderConfig.kind``)."""
    if provider_kind == "anthropic":
        return "anthropic"
    if provider_kind == "xai":
        return "xai"
    return "openai"


# --- cost ---------------------------------------------------------------------------------------


def cost_decimal(
    price: Price | None, usage: _OpenAIStyleUsage | AnthropicUsage, *, family: Family
) -> Decimal | None:
    """The exact cost in USD, or None when the price or the usage is unknown.

    ``family`` says how ``usage`` counts tokens:

    * ``"openai"`` (OpenAI, Gemini, Mistral, Groq, DeepSeek): ``cached_tokens`` is part of
      ``prompt_tokens`` and ``reasoning_tokens`` part of ``completion_tokens``. Uncached prompt
      tokens are priced at ``input``, cached at ``cached_input``, reasoning at ``reasoning`` and
      the rest of the completion at ``output``.
    * ``"xai"``: as openai, except ``reasoning_tokens`` is counted beside
      ``completion_tokens`` (xAI's total = prompt + completion + reasoning).
    * ``"anthropic"``: ``usage`` is an ``AnthropicUsage``.

    Usage without a prompt count (no usage event) is unknown; a missing completion count is 0
    (nothing was generated). A cached or reasoning count larger than its total is capped to it.
    """
    if family == "anthropic":
        if not isinstance(usage, AnthropicUsage):
            raise TypeError("family 'anthropic' needs an AnthropicUsage")
    elif family not in ("openai", "xai"):
        raise ValueError(f"unknown usage family {family!r}")
    elif isinstance(usage, AnthropicUsage):
        raise TypeError(f"family {family!r} cannot price an AnthropicUsage")
    if price is None:
        return None
    with localcontext(_CONTEXT):
        if isinstance(usage, AnthropicUsage):
            return _anthropic_cost(price, usage)
        prompt = usage.prompt_tokens
        if prompt is None:
            return None
        completion = usage.completion_tokens or 0
        cached = min(usage.cached_tokens or 0, prompt)
        reasoning = usage.reasoning_tokens or 0
        if family == "openai":
            reasoning = min(reasoning, completion)
            visible = completion - reasoning
        else:
            visible = completion
        tier = price.for_prompt(prompt)
        usd_per_million = (
            (prompt - cached) * tier.input
            + cached * tier.cached_input
            + visible * tier.output
            + reasoning * tier.reasoning
        )
        return usd_per_million / _MILLION


def _anthropic_cost(price: Price, usage: AnthropicUsage) -> Decimal | None:
    if usage.input_tokens is None:
        return None
    read = usage.cache_read_input_tokens or 0
    written = usage.cache_creation_input_tokens or 0
    written_1h = min(usage.cache_creation_1h_input_tokens or 0, written)
    tier = price.for_prompt(usage.input_tokens + read + written)
    usd_per_million = (
        usage.input_tokens * tier.input
        + read * tier.cached_input
        + (written - written_1h) * tier.cache_write
        + written_1h * tier.cache_write_1h
        + (usage.output_tokens or 0) * tier.output
    )
    return usd_per_million / _MILLION


def cost_usd(
    price: Price | None, usage: _OpenAIStyleUsage | AnthropicUsage, *, family: Family
) -> float | None:
    """``cost_decimal`` rounded half-even to 10 decimal places, as the record's float."""
    exact = cost_decimal(price, usage, family=family)
    if exact is None:
        return None
    return float(exact.quantize(_USD_PLACES, rounding=ROUND_HALF_EVEN))


def cost_micro_usd(
    price: Price | None,
    usage: _OpenAIStyleUsage | AnthropicUsage,
    *,
    family: Family,
    rounding: str = ROUND_HALF_EVEN,
) -> int | None:
    """The cost in whole micro-dollars (1e-6 USD), rounded with ``rounding``.

    A request can cost less than one micro-dollar (3 tokens at $0.15/M is 0.45 µ$): rounding
    half-even makes it 0, ``decimal.ROUND_CEILING`` makes it 1. A ledger that must never
    under-charge should round up, or keep the ``cost_decimal`` sum and round once.
    """
    exact = cost_decimal(price, usage, family=family)
    if exact is None:
        return None
    return int((exact / _MICRO).quantize(Decimal(1), rounding=rounding))


# --- the table ----------------------------------------------------------------------------------


def _decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise PricingError(f"{where} must be a number (USD per million tokens), not {value!r}")
    try:
        # str() of a float is its shortest repr, so 0.15 becomes Decimal("0.15"), not the
        # binary value 0.1499999999999999944488848768742172978818416595458984375.
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise PricingError(
            f"{where} must be a number (USD per million tokens), not {value!r}"
        ) from None
    if not number.is_finite() or number < 0:
        raise PricingError(f"{where} must be a finite number >= 0, not {value!r}")
    return number


def _build_tier(raw: Mapping[str, Any], where: str, allowed: frozenset[str]) -> Price:
    if not isinstance(raw, Mapping):
        raise PricingError(f"{where} must be a table of prices")
    for key in raw:
        if key not in allowed:
            raise PricingError(f"{where}.{key} is not a price field (one of {sorted(allowed)})")
    for key in ("input", "output"):
        if key not in raw:
            raise PricingError(f"{where}.{key} is missing")
    input_ = _decimal(raw["input"], f"{where}.input")
    output = _decimal(raw["output"], f"{where}.output")

    def opt(key: str, default: Decimal) -> Decimal:
        return _decimal(raw[key], f"{where}.{key}") if key in raw else default

    cache_write = opt("cache_write", input_)
    return Price(
        input=input_,
        output=output,
        cached_input=opt("cached_input", input_),
        reasoning=opt("reasoning", output),
        cache_write=cache_write,
        cache_write_1h=opt("cache_write_1h", cache_write),
    )


def _build_price(raw: Mapping[str, Any], where: str) -> Price:
    price = _build_tier(raw, where, _KEYS)
    long_raw = raw.get("long_context")
    if long_raw is None:
        return price
    long_where = f"{where}.long_context"
    if not isinstance(long_raw, Mapping):
        raise PricingError(f"{long_where} must be a table")
    above = long_raw.get("above")
    if isinstance(above, bool) or not isinstance(above, int) or above < 0:
        raise PricingError(f"{long_where}.above must be a whole number of prompt tokens >= 0")
    tier = _build_tier({k: v for k, v in long_raw.items() if k != "above"}, long_where, _LONG_KEYS)
    return Price(
        input=price.input,
        output=price.output,
        cached_input=price.cached_input,
        reasoning=price.reasoning,
        cache_write=price.cache_write,
        cache_write_1h=price.cache_write_1h,
        long_context_above=above,
        long_context=tier,
    )


def _normalise(model: str) -> str:
    name = model.strip().lower()
    # Gemini answers with "models/gemini-2.5-flash" on some endpoints.
    return name[len("models/"):] if name.startswith("models/") else name


class PriceTable:
    """Prices by provider kind and model: the shipped list with operator overrides over it."""

    __slots__ = ("_prices", "_by_length", "_cache")

    def __init__(self, prices: Mapping[str, Mapping[str, Price]]) -> None:
        self._prices: dict[str, dict[str, Price]] = {
            kind.lower(): {_normalise(model): price for model, price in models.items()}
            for kind, models in prices.items()
        }
        # Longest first, so "gpt-4o-mini-2024-07-18" meets gpt-4o-mini before gpt-4o.
        self._by_length: dict[str, tuple[str, ...]] = {
            kind: tuple(sorted(models, key=len, reverse=True))
            for kind, models in self._prices.items()
        }
        self._cache: dict[tuple[str, str], Price | None] = {}

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
        *,
        path: str | Path | None = None,
    ) -> PriceTable:
        """The shipped ``prices.toml`` (or ``path``), with ``overrides`` merged over it.

        ``overrides`` maps provider kind → model → fields, the same fields as the file. Fields
        merge over the shipped model's fields (overriding only ``input`` keeps its other
        prices); a ``long_context`` table replaces the shipped one whole; a model not shipped is
        added and needs ``input`` and ``output``.
        """
        if path is None:
            text = (Path(__file__).resolve().parent / "prices.toml").read_text("utf-8")
            source = "kraken/billing/prices.toml"
        else:
            text = Path(path).read_text("utf-8")
            source = str(path)
        try:
            shipped = tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise PricingError(f"{source}: {exc}") from None
        raw = _merge_raw(shipped, source, {})
        if overrides:
            raw = _merge_raw(overrides, "price override", raw)
        return cls(
            {
                kind: {
                    model: _build_price(fields, f"{where}.{model}")
                    for model, (where, fields) in models.items()
                }
                for kind, models in raw.items()
            }
        )

    def lookup(self, provider_kind: str, model: str) -> Price | None:
        """The price of ``model`` at a provider of this kind, or None when it is not known.

        Exact name first (case-insensitive), then the longest listed name that ``model``
        extends with a snapshot suffix only (see ``_SNAPSHOT_SUFFIX``).
        """
        key = (provider_kind, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        price = self._find(provider_kind.lower(), _normalise(model))
        if len(self._cache) >= _LOOKUP_CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = price
        return price

    def _find(self, kind: str, name: str) -> Price | None:
        price = self._find_in(kind, name)
        if price is None and kind in SAME_PRICES_AS:
            price = self._find_in(SAME_PRICES_AS[kind], name)
        return price

    def _find_in(self, kind: str, name: str) -> Price | None:
        models = self._prices.get(kind)
        if not models:
            return None
        price = models.get(name)
        if price is not None:
            return price
        for known in self._by_length[kind]:
            if name.startswith(known) and _SNAPSHOT_SUFFIX.fullmatch(name, len(known)):
                return models[known]
        return None

    def models(self, provider_kind: str) -> tuple[str, ...]:
        """The model names listed for a provider kind (for admin listings and tests)."""
        kind = provider_kind.lower()
        return tuple(sorted({**self._prices.get(SAME_PRICES_AS.get(kind, ""), {}),
                             **self._prices.get(kind, {})}))

    @property
    def provider_kinds(self) -> tuple[str, ...]:
        """Kinds with prices: listed ones and those priced as a listed one."""
        return tuple(sorted({*self._prices, *(k for k, v in SAME_PRICES_AS.items()
                                              if v in self._prices)}))


def _merge_raw(
    layer: Mapping[str, Any],
    source: str,
    base: dict[str, dict[str, tuple[str, dict[str, Any]]]],
) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
    """Merge one layer of raw tables (kind → model → fields) over ``base``; remember the source
    of each model's last layer so errors name the file or the override."""
    if not isinstance(layer, Mapping):
        raise PricingError(f"{source}: prices must be a table of provider kinds")
    merged = {kind: dict(models) for kind, models in base.items()}
    for kind, models in layer.items():
        if not isinstance(models, Mapping):
            raise PricingError(f"{source}: [{kind}] must be a table of models")
        target = merged.setdefault(str(kind).lower(), {})
        for model, fields in models.items():
            where = f"{source}: {kind}"
            if not isinstance(fields, Mapping):
                raise PricingError(f"{where}.{model} must be a table of prices")
            name = _normalise(str(model))
            previous = target.get(name, ("", {}))[1]
            target[name] = (where, {**previous, **fields})
    return merged
