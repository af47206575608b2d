"""Router: candidate order (priority, weights), aliases, ``auto`` by task, price and health."""
from __future__ import annotations

import collections
import random

import pytest

from kraken import config
from kraken.billing.pricing import PriceTable
from kraken.errors import BadRequest, NotFound
from kraken.policy.router import Provider, Router
from kraken.providers.openai_compat import OpenAICompat
from kraken.upstream.pool import Origin, OriginPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def doc(**sections):
    base = {
        "providers": {
            name: {"kind": "openai_compatible", "base_url": f"http://127.0.0.1:9/{name}",
                   "models": []}
            for name in ("pa", "pb", "pc")
        },
        "prices": {"openai_compatible": {
            "cheap-m": {"input": 0.1, "output": 0.4},
            "mid-m": {"input": 1.0, "output": 4.0},
            "dear-m": {"input": 5.0, "output": 15.0},
        }},
    }
    base.update(sections)
    return base


def build(raw: dict, seed: int = 7, clock=None) -> Router:
    cfg = config.from_mapping(raw, "<t>", env={})
    providers = {}
    for p in cfg.providers:
        origin = Origin(p.base_url)
        providers[p.name] = Provider(p.name, OpenAICompat(p, origin.base_path, origin.authority),
                                     OriginPool(origin, p.name))
    return Router(providers, cfg.models, {p.name: p.models for p in cfg.providers},
                  aliases=cfg.aliases, routing=cfg.routing, prices=PriceTable.load(cfg.prices),
                  rng=random.Random(seed), clock=clock or Clock())


def names(routes) -> list[str]:
    return [f"{r.provider.name}/{r.model}" for r in routes]


def test_list_form_is_a_strict_order():
    r = build(doc(models={"m": ["pb/x", "pa/y"], "one": "pc/z"}))
    for _ in range(20):
        assert names(r.candidates("m")) == ["pb/x", "pa/y"]
    assert names(r.candidates("one")) == ["pc/z"]


def test_equal_priority_candidates_share_the_first_attempt_by_weight():
    r = build(doc(models={"gpt": {"candidates": [
        {"target": "pa/gpt", "weight": 3}, {"target": "pb/gpt", "weight": 1}]}}), seed=1234)
    firsts = collections.Counter()
    for _ in range(4000):
        order = names(r.candidates("gpt"))
        assert sorted(order) == ["pa/gpt", "pb/gpt"], "the other one is the fallback"
        firsts[order[0]] += 1
    assert 2850 <= firsts["pa/gpt"] <= 3150, firsts
    assert firsts["pa/gpt"] + firsts["pb/gpt"] == 4000


def test_weighted_order_is_reproducible_with_a_seed():
    spec = doc(models={"gpt": {"candidates": ["pa/gpt", "pb/gpt", "pc/gpt"]}})
    a, b = build(spec, seed=99), build(spec, seed=99)
    assert [names(a.candidates("gpt")) for _ in range(50)] == \
           [names(b.candidates("gpt")) for _ in range(50)]


def test_lower_priority_always_goes_first_weights_only_break_ties():
    r = build(doc(models={"gpt": {"candidates": [
        {"target": "pc/gpt", "priority": 1, "weight": 100},
        {"target": "pa/gpt", "weight": 1}, {"target": "pb/gpt", "weight": 1}]}}))
    seen_first = set()
    for _ in range(200):
        order = names(r.candidates("gpt"))
        assert order[2] == "pc/gpt"
        seen_first.add(order[0])
    assert seen_first == {"pa/gpt", "pb/gpt"}


def test_aliases_resolve_to_models_and_are_listed():
    r = build(doc(models={"mini": "pa/cheap-m", "big": "pb/dear-m"},
                  aliases={"fast": "mini", "best-code": "big", "raw": "pc/anything"}))
    assert names(r.candidates("fast")) == ["pa/cheap-m"]
    assert names(r.candidates("best-code")) == ["pb/dear-m"]
    assert names(r.candidates("raw")) == ["pc/anything"]
    listed = dict(r.models())
    assert listed["fast"] == "pa" and listed["best-code"] == "pb" and "auto" not in listed


def test_unknown_model_is_404_and_explicit_provider_model_works():
    r = build(doc())
    with pytest.raises(NotFound) as exc:
        r.candidates("nope")
    assert exc.value.code == "model_not_found"
    with pytest.raises(NotFound):
        r.candidates("auto"), "auto is not served without [routing] auto_models"
    assert names(r.candidates("pb/whatever")) == ["pb/whatever"]


AUTO = {
    "models": {"cheap": "pa/cheap-m", "mid": "pb/mid-m", "dear": "pc/dear-m"},
    "routing": {"auto_models": ["dear", "mid", "cheap"], "prefer": {"code_gen": ["dear"]},
             "latency_weight": 1.0},
    "aliases": {"smart": "auto"},
}


def test_auto_picks_the_cheapest_healthy_route():
    r = build(doc(**AUTO))
    assert names(r.candidates("auto", task="chat")) == ["pa/cheap-m", "pb/mid-m", "pc/dear-m"]
    assert names(r.candidates("smart")) == ["pa/cheap-m", "pb/mid-m", "pc/dear-m"]
    assert dict(r.models())["auto"] == "kraken"


def test_only_auto_and_its_aliases_route_by_the_task():
    r = build(doc(**AUTO))
    assert r.routes_by_task("auto") and r.routes_by_task("smart")
    assert not any(r.routes_by_task(m) for m in ("cheap", "pb/anything", "nope"))
    assert not build(doc()).routes_by_task("auto"), "no auto_models: auto is not served"


def test_auto_prefers_the_tasks_models_then_the_rest_by_score():
    r = build(doc(**AUTO))
    assert names(r.candidates("auto", task="code_gen")) == ["pc/dear-m", "pa/cheap-m", "pb/mid-m"]


def test_auto_moves_away_from_a_failing_route_and_back_once_it_recovers():
    clock = Clock()
    r = build(doc(**AUTO), clock=clock)
    r.health.failure("pa", "cheap-m")  # error rate 0.2: still the best expected price
    assert names(r.candidates("auto", task="chat"))[0] == "pa/cheap-m"
    r.health.failure("pa", "cheap-m")  # 0.36, above auto_max_error_rate: after healthier ones
    assert names(r.candidates("auto", task="chat")) == ["pb/mid-m", "pc/dear-m", "pa/cheap-m"]
    clock.now += 120  # two half-lives without traffic: 0.09
    assert names(r.candidates("auto", task="chat"))[0] == "pa/cheap-m"


def test_auto_ranks_equal_prices_by_error_rate():
    r = build(doc(models={"one": "pa/mid-m", "two": "pb/mid-m"},
                  routing={"auto_models": ["one", "two"]}))
    assert names(r.candidates("auto")) == ["pa/mid-m", "pb/mid-m"]
    r.health.failure("pa", "mid-m")
    assert names(r.candidates("auto")) == ["pb/mid-m", "pa/mid-m"]


def test_auto_weighs_latency():
    r = build(doc(**AUTO))
    r.health.success("pa", "cheap-m", 9000.0)  # 9 s ttfb costs 9 > mid's 5
    assert names(r.candidates("auto", task="chat"))[:2] == ["pb/mid-m", "pa/cheap-m"]


def test_auto_puts_unpriced_routes_last_never_treats_them_as_free():
    raw = doc(models={"cheap": "pa/cheap-m", "mystery": "pb/unpriced-m"},
              routing={"auto_models": ["mystery", "cheap"]})
    assert names(build(raw).candidates("auto")) == ["pa/cheap-m", "pb/unpriced-m"]


@pytest.mark.parametrize("sections, key", [
    ({"models": {"m": {"candidates": [{"target": "pa/x", "weight": 0}]}}}, "models.m.candidates[0].weight"),
    ({"models": {"m": {"candidates": [{"target": "pa/x", "priority": -1}]}}}, "models.m.candidates[0].priority"),
    ({"models": {"m": {"candidates": [{"target": "pa/x", "color": 1}]}}}, "models.m.candidates[0].color"),
    ({"models": {"m": {"candidates": ["nope"]}}}, "models.m.candidates[0].target"),
    ({"models": {"m": {"candidates": []}}}, "models.m.candidates"),
    ({"models": {"m": {"candidates": ["ghost/x"]}}}, "models.m"),
    ({"models": {"m": {"targets": ["pa/x"]}}}, "models.m"),
    ({"models": {"auto": "pa/x"}}, "models.auto"),
    ({"aliases": {"fast": "nothing"}}, "aliases.fast"),
    ({"models": {"m": "pa/x"}, "aliases": {"m": "pa/y"}}, "aliases.m"),
    ({"routing": {"auto_models": ["nothing"]}}, "routing.auto_models"),
    ({"models": {"m": "pa/x"}, "routing": {"auto_models": ["m"], "prefer": {"poetry": ["m"]}}},
     "routing.prefer.poetry"),
    ({"models": {"m": "pa/x", "n": "pb/x"}, "routing": {"auto_models": ["m"], "prefer": {"chat": ["n"]}}},
     "routing.prefer.chat"),
    ({"routing": {"max_attempts": 0}}, "routing.max_attempts"),
    ({"routing": {"ewma_alpha": 1.5}}, "routing.ewma_alpha"),
    ({"routing": {"breaker_failure_rate": 2}}, "routing.breaker_failure_rate"),
    ({"routing": {"colour": 1}}, "routing.colour"),
    ({"routing": {"auto_max_error_rate": 1.5}}, "routing.auto_max_error_rate"),
])
def test_config_errors_name_the_key(sections, key):
    with pytest.raises(config.ConfigError) as exc:
        config.from_mapping(doc(**sections), "<t>", env={})
    assert key in str(exc.value)


def test_config_forms_parse_to_targets():
    cfg = config.from_mapping(doc(models={
        "a": "pa/x", "b": ["pa/x", "pb/y"],
        "c": {"candidates": ["pa/x", {"target": "pb/y", "weight": 2.5, "priority": 1}]}}),
        "<t>", env={})
    T = config.ModelTarget
    assert cfg.models == {"a": (T("pa/x", 1.0, 0),), "b": (T("pa/x", 1.0, 0), T("pb/y", 1.0, 1)),
                          "c": (T("pa/x", 1.0, 0), T("pb/y", 2.5, 1))}
    assert cfg.routing == config.RoutingConfig()


def test_model_names_clients_choose_are_bounded_and_configured_names_always_pass():
    """``provider/<model>`` is client text: bounded to what provider model names use. The
    operator's own names (models, aliases) are accepted whatever they contain."""
    r = build(doc(models={"team model (eu)": ["pa/x"]}, aliases={"fast ⚡": "team model (eu)"}))
    for name in ("team model (eu)", "fast ⚡", "pa/llama3.1:8b", "pa/@cf/meta/llama-3-8b",
                 "pa/ft:gpt-4o-mini:org::id", "pa/" + "x" * 253):
        r.check_name(name)
    for name in ("pa/x y", "pa/x\n", "pa/é", "pa/" + "x" * 254, "pa/x\"", "pa/x{}", ""):
        with pytest.raises(BadRequest) as info:
            r.check_name(name)
        assert info.value.param == "model"
        assert not name[4:] or name[4:] not in info.value.message  # never echoed
    assert r.served_models()["pa"] == {"x"}
