"""Interleaved rounds: a scenario run once per target in each round, the order rotated by one
each round, so targets compared with each other share the machine's drift and each runs in each
place equally often.

On a shared VM one run's figures move by a third from the next run's. A burst of 1000 streams is
decided by a target's first burst on fresh processes, so it cannot be repeated on one process:
both bench/run.py's burst row (``--burst-rounds``) and bench/ab.py spawn fresh targets each
round, and read the figures as ratios to nginx in the same round."""
from __future__ import annotations

import statistics
from typing import Callable


def interleaved(names: list[str], rounds: int,
                one: Callable[[str, int], float | None]) -> dict[str, list[float | None]]:
    """``one(name, round)`` for every name in every round, in the given order rotated by ``round``
    places (two names: alternately). The figures, per name, in round order (None: that run
    failed). Reversed every other round, as before, the middle one of three ran in the middle
    in every round: bench/ab.py's B always ran right after A or nginx."""
    figures: dict[str, list[float | None]] = {name: [] for name in names}
    for n in range(rounds):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            figures[name].append(one(name, n))
    return figures


def per_round_ratios(figures: list[float | None], base: list[float | None]) -> list[float]:
    """Each round's figure over the base's in the same round (rounds where either failed are
    left out)."""
    return [f / b for f, b in zip(figures, base) if f is not None and b]


def median_or_none(values: list[float | None]) -> float | None:
    """The median of the figures that exist (None when none does)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio_line(name: str, ratios: list[float], base: str = "nginx") -> str:
    """``kraken x nginx per round 1.31 / 1.12 / ...; median x1.19``"""
    if not ratios:
        return f"{name}: no round with both {name} and {base}"
    return (f"{name}: x {base} per round " + " / ".join(f"{r:.2f}" for r in ratios)
            + f"; median x{statistics.median(ratios):.2f}")
