"""bench/ab.py's sign test: how many rounds B was below A, and how likely that split is when
the two do not differ."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ab import sign_test  # noqa: E402


def test_the_ab_sign_test_counts_the_rounds_b_was_lower_and_how_likely_that_split_is():
    assert sign_test([5.0] * 10, [4.0] * 10) == (10, 10, 2 / 2 ** 10)  # every round: p = 0.002
    assert sign_test([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0]) == (2, 4, 1.0)  # an even split
    below, differed, p = sign_test([70.0] * 24, [69.0] * 14 + [71.0] * 10)
    assert (below, differed) == (14, 24) and 0.5 < p < 0.6  # 14 of 24: no evidence either way
    assert sign_test([3.0, 3.0, 2.0], [3.0, 3.0, 1.0]) == (1, 1, 1.0)  # ties are left out
