"""Public model names to ordered (provider, upstream model) candidates.

Clients name a model; only the operator's configuration names providers and URLs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from kraken.errors import NotFound
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.pool import OriginPool


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


class Router:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        models: Mapping[str, tuple[str, ...]],
        exposed: Mapping[str, tuple[str, ...]],
    ):
        self._providers = dict(providers)
        self._table: dict[str, tuple[Route, ...]] = {}
        for provider_name, names in exposed.items():
            for name in names:
                self._table.setdefault(name, (Route(self._providers[provider_name], name),))
        for public, targets in models.items():
            self._table[public] = tuple(self._route(t) for t in targets)

    def _route(self, target: str) -> Route:
        provider_name, model = target.split("/", 1)
        return Route(self._providers[provider_name], model)

    def candidates(self, model: str) -> tuple[Route, ...]:
        """Routes to try in order; explicit ``provider/model`` works for configured providers."""
        routes = self._table.get(model)
        if routes:
            return routes
        provider_name, _, upstream = model.partition("/")
        if upstream and provider_name in self._providers:
            return (Route(self._providers[provider_name], upstream),)
        raise NotFound(f"The model '{model[:200]}' does not exist or is not served here",
                       code="model_not_found")

    def models(self) -> list[tuple[str, str]]:
        """(public model name, owning provider) for GET /v1/models."""
        return [(name, routes[0].provider.name) for name, routes in sorted(self._table.items())]
