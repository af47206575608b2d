"""Interleaved rounds: a scenario run once per target in each round, the order rotated by one
each round, so targets compared with each other share the machine's drift and each runs in each
place equally often.

On a shared VM one run's figures move by a third from the next run's. A burst of 1000 streams is
decided by a target's first burst on fresh processes, so it cannot be repeated on one process:
both bench/run.py's burst row (``--burst-rounds``) and bench/ab.py spawn fresh targets each
round, and read the figures as ratios to nginx in the same round."""
from __future__ import annotations

import random
import statistics
from typing import Callable

MIN_ROUNDS_FOR_INTERVAL = 5
"""Fewer rounds than this get no interval: their resamples would mostly repeat the sample."""


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


def median_interval(ratios: list[float], level: float = 0.9, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float] | None:
    """Where the median of the per-round ratios would likely fall on another run of as many
    rounds: the bootstrap's percentile interval (``resamples`` draws with replacement, seeded,
    so a line reads the same each time it is printed). A row "on the line" is one whose
    interval holds its target; None below ``MIN_ROUNDS_FOR_INTERVAL`` rounds."""
    if len(ratios) < MIN_ROUNDS_FOR_INTERVAL:
        return None
    draw = random.Random(seed).choices
    medians = sorted(statistics.median(draw(ratios, k=len(ratios))) for _ in range(resamples))
    cut = round((1 - level) / 2 * (resamples - 1))
    return medians[cut], medians[resamples - 1 - cut]


def ratio_line(name: str, ratios: list[float], base: str = "nginx") -> str:
    """``kraken x nginx per round 1.31 / 1.12 / ...; median x1.19`` and, from five rounds on,
    `` (90% interval x1.08-x1.27)``: ``median_interval``."""
    if not ratios:
        return f"{name}: no round with both {name} and {base}"
    interval = median_interval(ratios)
    return (f"{name}: x {base} per round " + " / ".join(f"{r:.2f}" for r in ratios)
            + f"; median x{statistics.median(ratios):.2f}"
            + (f" (90% interval x{interval[0]:.2f}-x{interval[1]:.2f})" if interval else ""))
