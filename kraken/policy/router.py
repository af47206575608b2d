"""Public model names to ordered (provider, upstream model) candidates.

Clients name a model (or an alias of one, or ``auto``); only the operator's configuration names
providers and URLs. ``candidates`` decides the order of attempts for one request:

* a configured model: candidates of the lowest priority share the first attempt by weight
  (a seeded ``random.Random`` makes it reproducible), the rest follow as fallbacks;
* ``auto``: the models of ``[routing] auto_models`` (those preferred for the request's task
  type first), each route scored by price, moving-average error rate and ttfb (``health.py``).

Which candidates are actually tried (open circuits skipped, attempts bounded) is the
dispatcher's business (``fallback.py``); this module never does I/O.
"""
from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kraken.config import ModelTarget, RoutingConfig
from kraken.errors import InvalidValue, ModelNotFound
from kraken.policy.breaker import Breakers
from kraken.policy.health import HealthBoard
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.pool import OriginPool

AUTO = "auto"
MAX_MODEL_NAME = 256
_MODEL_NAME = re.compile(r"[A-Za-z0-9._:/@+\-]+")
"""What providers' model names are made of: ``llama3.1:8b``, ``meta-llama/Llama-3.1-8B-Instruct``,
``accounts/fireworks/models/x``, ``@cf/meta/llama-3-8b``, ``claude-3-5-sonnet-v2@20241022``,
``ft:gpt-4o-mini:org::id``, ``anthropic.claude-3-5-sonnet-20240620-v1:0``, ``hf.co/x/y:Q4_K_M``."""
_MAX_ERROR_RATE = 0.95
"""Caps the expected-attempts factor 1/(1 - error rate) at 20."""


@dataclass(frozen=True, slots=True)
class Provider:
    """A configured provider at run time: its wire family and its connection pool."""

    name: str
    family: OpenAICompat
    pool: OriginPool


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    model: str


@dataclass(frozen=True, slots=True)
class _Weighted:
    route: Route
    weight: float
    priority: int


class _Table:
    """One public model's candidates, grouped by priority for the weighted draw."""

    __slots__ = ("fixed", "groups")

    def __init__(self, entries: list[_Weighted]):
        by_priority: dict[int, list[_Weighted]] = {}
        for e in entries:
            by_priority.setdefault(e.priority, []).append(e)
        self.groups = tuple(tuple(by_priority[p]) for p in sorted(by_priority))
        self.fixed: tuple[Route, ...] | None = None
        """The order when no draw is needed (every priority group has one candidate)."""
        if all(len(g) == 1 for g in self.groups):
            self.fixed = tuple(g[0].route for g in self.groups)

    def order(self, rng: random.Random) -> tuple[Route, ...]:
        if self.fixed is not None:
            return self.fixed
        out: list[Route] = []
        for group in self.groups:
            if len(group) == 1:
                out.append(group[0].route)
            else:  # weighted order without replacement (Efraimidis–Spirakis keys)
                keyed = sorted(group, key=lambda e: rng.random() ** (1 / e.weight), reverse=True)
                out.extend(e.route for e in keyed)
        return tuple(out)


class Router:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        models: Mapping[str, Iterable[str | ModelTarget]],
        exposed: Mapping[str, tuple[str, ...]],
        *,
        aliases: Mapping[str, str] | None = None,
        routing: RoutingConfig | None = None,
        prices=None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``models`` values are ``provider/model`` strings (strict order) or ``ModelTarget``s;
        ``prices`` is a ``PriceTable`` (needed only for ``auto``)."""
        self._providers = dict(providers)
        self.routing = routing or RoutingConfig()
        self.max_attempts = self.routing.max_attempts
        self._rng = rng or random.Random()
        self._tables: dict[str, _Table] = {}
        for provider_name, names in exposed.items():
            for name in names:
                route = Route(self._providers[provider_name], name)
                self._tables.setdefault(name, _Table([_Weighted(route, 1.0, 0)]))
        for public, targets in models.items():
            entries = []
            for i, t in enumerate(targets):
                target = ModelTarget(t, 1.0, i) if isinstance(t, str) else t
                entries.append(_Weighted(self._route(target.target), target.weight, target.priority))
            self._tables[public] = _Table(entries)
        self._aliases = dict(aliases or {})
        r = self.routing
        self.health = HealthBoard(alpha=r.ewma_alpha, recovery_s=r.health_recovery_s, clock=clock)
        self.health.track((route.provider.name, route.model) for route in self._all_routes())
        self.breakers = Breakers(self._providers, failures=r.breaker_failures,
                                 failure_rate=r.breaker_failure_rate,
                                 min_requests=r.breaker_min_requests,
                                 cooldown_s=r.breaker_cooldown_s, clock=clock)
        self._auto = self._auto_tiers(prices)

    def _route(self, target: str) -> Route:
        provider_name, model = target.split("/", 1)
        return Route(self._providers[provider_name], model)

    def _all_routes(self) -> set[Route]:
        return {e.route for t in self._tables.values() for g in t.groups for e in g}

    def check_name(self, model: str) -> None:
        """A 400 naming ``model`` unless it is a configured name (model, alias) or looks like
        a provider's model name (``MAX_MODEL_NAME`` characters of ``_MODEL_NAME``'s set).

        ``provider/<model>`` lets a client choose any text after a provider's name; that text
        reaches the record, the request log and the provider, so it is bounded first."""
        if model in self._tables or model in self._aliases:
            return
        if len(model) > MAX_MODEL_NAME or _MODEL_NAME.fullmatch(model) is None:
            raise InvalidValue(f"model: must be 1 to {MAX_MODEL_NAME} letters, digits or . _ : / @ "
                               "+ - (a provider's model name)", param="model")

    @property
    def providers(self) -> tuple[Provider, ...]:
        """The configured providers, in configuration order."""
        return tuple(self._providers.values())

    def served_models(self) -> dict[str, frozenset[str]]:
        """Provider name -> the upstream models the configuration routes to there (models,
        exposed lists, ``provider/model`` aliases): the metric label values of each provider."""
        served: dict[str, set[str]] = {name: set() for name in self._providers}
        for route in self._all_routes():
            served[route.provider.name].add(route.model)
        for target in self._aliases.values():
            provider_name, _, model = target.partition("/")
            if model and provider_name in served:
                served[provider_name].add(model)
        return {name: frozenset(models) for name, models in served.items()}

    def candidates(self, model: str, *, task: str | None = None) -> tuple[Route, ...]:
        """Routes to try in order; explicit ``provider/model`` works for configured providers.

        ``model`` may be an alias; ``auto`` orders by ``task`` (a classify.py label), price
        and live health.
        """
        model = self._aliases.get(model, model)
        table = self._tables.get(model)
        if table is not None:
            return table.order(self._rng)
        if model == AUTO and self._auto:
            return self._auto_order(task)
        provider_name, _, upstream = model.partition("/")
        if upstream and provider_name in self._providers:
            return (Route(self._providers[provider_name], upstream),)
        raise ModelNotFound(f"The model '{model[:200]}' does not exist or is not served here")

    def routes_by_task(self, model: str) -> bool:
        """Whether ``candidates`` orders ``model``'s routes by the request's task (``auto``)."""
        return bool(self._auto) and self._aliases.get(model, model) == AUTO

    def models(self) -> list[tuple[str, str]]:
        """(public model name, owning provider) for GET /v1/models, aliases and auto included."""
        out = {name: t.groups[0][0].route.provider.name for name, t in self._tables.items()}
        for alias, target in self._aliases.items():
            if target in out:
                out[alias] = out[target]
            elif target == AUTO and self._auto:
                out[alias] = "kraken"
            elif "/" in target:
                out[alias] = target.split("/", 1)[0]
        if self._auto:
            out[AUTO] = "kraken"
        return sorted(out.items())

    # ---- auto ----------------------------------------------------------------------
    def _auto_tiers(self, prices) -> dict[str | None, tuple[tuple[tuple[Route, float], ...], ...]]:
        """Per task type: tiers of (route, blended price per 1M tokens), preferred tier first.

        Prices are static, so they are looked up once here; a route without a price scores
        as infinitely expensive (tried after every priced one), never as free.
        """
        r = self.routing
        if not r.auto_models:
            return {}

        def priced(names: Iterable[str]) -> tuple[tuple[Route, float], ...]:
            seen: dict[Route, float] = {}
            for name in names:
                for group in self._tables[name].groups if name in self._tables else ():
                    for e in group:
                        seen.setdefault(e.route, _blended(prices, e.route))
            return tuple(seen.items())

        tiers: dict[str | None, tuple[tuple[tuple[Route, float], ...], ...]] = {
            None: (priced(r.auto_models),)}
        for task, preferred in r.prefer.items():
            rest = [m for m in r.auto_models if m not in preferred]
            tiers[task] = (priced(preferred), priced(rest))
        return tiers

    def _auto_order(self, task: str | None) -> tuple[Route, ...]:
        tiers = self._auto.get(task) or self._auto[None]
        out: list[Route] = []
        seen: set[Route] = set()
        for tier in tiers:
            scored = sorted(tier, key=self._score)
            for route, _ in scored:
                if route not in seen:
                    seen.add(route)
                    out.append(route)
        return tuple(out)

    def _score(self, item: tuple[Route, float]) -> tuple[bool, bool, float]:
        """(unhealthy, unpriced, expected price of a success plus latency); lower is better.

        price / (1 - error rate) is the price of the expected number of attempts;
        ``latency_weight`` converts seconds of ttfb into the same unit (USD per 1M tokens).
        A route failing more than ``auto_max_error_rate`` goes after every healthier one
        however cheap; unpriced routes go after priced ones, ranked as if priced 1.
        """
        route, price = item
        unpriced = price == math.inf
        ttfb_ms, error_rate = self.health.snapshot(route.provider.name, route.model)
        score = (1.0 if unpriced else price) / (1 - min(error_rate, _MAX_ERROR_RATE))
        if ttfb_ms is not None:
            score += self.routing.latency_weight * ttfb_ms / 1000
        return error_rate > self.routing.auto_max_error_rate, unpriced, score


def _blended(prices, route: Route) -> float:
    """Input plus output price per 1M tokens of a route (inf when unknown)."""
    if prices is None:
        return math.inf
    price = prices.lookup(route.provider.family.cfg.kind, route.model)
    if price is None:
        return math.inf
    return float(price.input + price.output)
