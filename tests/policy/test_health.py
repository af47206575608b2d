"""EWMA health per (provider, model): ttfb and error rate, with an injected clock."""
from __future__ import annotations

import pytest

from kraken import metrics
from kraken.policy.health import HealthBoard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def board():
    clock = Clock()
    b = HealthBoard(alpha=0.25, recovery_s=60.0, clock=clock)
    b.track([("hp_a", "m1"), ("hp_b", "m1")])
    b.clock_ = clock
    return b


def test_first_success_sets_ttfb_then_it_moves_by_alpha(board):
    board.success("hp_a", "m1", 100.0)
    assert board.snapshot("hp_a", "m1") == (100.0, 0.0)
    board.success("hp_a", "m1", 200.0)
    assert board.snapshot("hp_a", "m1")[0] == pytest.approx(125.0)


def test_failures_raise_the_error_rate_and_successes_lower_it(board):
    board.failure("hp_a", "m1")
    assert board.snapshot("hp_a", "m1")[1] == pytest.approx(0.25)
    board.failure("hp_a", "m1")
    assert board.snapshot("hp_a", "m1")[1] == pytest.approx(0.4375)
    board.success("hp_a", "m1", 50.0)
    assert board.snapshot("hp_a", "m1")[1] == pytest.approx(0.328125)
    assert board.snapshot("hp_b", "m1") == (None, 0.0), "routes are independent"


def test_an_idle_routes_error_rate_halves_every_recovery_period(board):
    board.failure("hp_a", "m1")
    board.clock_.now += 60
    assert board.snapshot("hp_a", "m1")[1] == pytest.approx(0.125)
    board.clock_.now += 120
    assert board.snapshot("hp_a", "m1")[1] == pytest.approx(0.03125)


def test_untracked_routes_are_ignored_so_the_table_stays_bounded(board):
    board.failure("hp_a", "client-invented-model")
    board.success("hp_a", "client-invented-model", 10.0)
    assert board.snapshot("hp_a", "client-invented-model") == (None, 0.0)
    assert metrics.REGISTRY.get_sample_value("kraken_route_ttfb_ewma_seconds",
                                             {"provider": "hp_a",
                                              "model": "client-invented-model"}) is None


def test_averages_are_exported_as_gauges(board):
    board.success("hp_b", "m1", 250.0)
    board.failure("hp_b", "m1")
    labels = {"provider": "hp_b", "model": "m1"}
    assert metrics.REGISTRY.get_sample_value("kraken_route_ttfb_ewma_seconds", labels) == 0.25
    assert metrics.REGISTRY.get_sample_value("kraken_route_error_rate_ewma", labels) == 0.25


def test_alpha_must_be_a_fraction():
    with pytest.raises(ValueError):
        HealthBoard(alpha=0)


def test_the_gauges_follow_every_success_exactly_as_floats(board):
    """success stores the gauges' values itself: the exported series are the board's own
    averages (ttfb in seconds), floats even when the ttfb given is an int, decayed after idle."""
    labels = {"provider": "hp_a", "model": "m1"}
    sample = metrics.REGISTRY.get_sample_value
    board.success("hp_a", "m1", 120)
    assert sample("kraken_route_ttfb_ewma_seconds", labels) == 0.12
    assert sample("kraken_route_error_rate_ewma", labels) == 0.0
    board.failure("hp_a", "m1")
    board.clock_.now += 60  # half the rate decays away before the next success
    board.success("hp_a", "m1", None)
    ttfb, rate = board.snapshot("hp_a", "m1")
    assert rate == 0.25 * 0.5 * 0.75
    assert sample("kraken_route_error_rate_ewma", labels) == rate
    assert sample("kraken_route_ttfb_ewma_seconds", labels) == ttfb / 1000 == 0.12
    text = metrics.REGISTRY.exposition().decode()
    assert 'kraken_route_ttfb_ewma_seconds{model="m1",provider="hp_a"} 0.12\n' in text
