"""The request body's nesting bound: the C walk (kraken._speedups.nests_deeper) answers as its
Python definition (kraken/gateway/body.py) does, on every shape a parsed JSON body can take."""
from __future__ import annotations

import random

import orjson
import pytest

from kraken import speedups
from kraken.gateway import body
from kraken.gateway.body import MAX_DEPTH, _too_deep_py, nests_deeper_c, nests_deeper_py

built = pytest.mark.skipif(nests_deeper_c is None, reason="kraken._speedups not built")


def test_the_c_walk_serves_unless_python_is_asked_for():
    python = nests_deeper_c is None or speedups.PURE_PYTHON
    assert body._too_deep is (body._too_deep_py if python else body._too_deep_c)


def random_document(rng: random.Random, depth: int) -> object:
    """A JSON value nesting at most ``depth`` levels, of uneven shape: wide and deep branches,
    empty containers, scalars between them."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice([1, "[{", None, True, 2.5, ""])
    width = rng.choice([0, 1, 1, 2, 3, 6])
    if rng.random() < 0.5:
        return [random_document(rng, depth - 1) for _ in range(width)]
    return {f"k{i}": random_document(rng, depth - 1) for i in range(width)}


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


@built
def test_c_and_python_agree_on_random_documents_at_every_limit():
    rng = random.Random(13)
    for _ in range(3000):
        doc = random_document(rng, rng.randint(0, 9))
        doc = orjson.loads(orjson.dumps(doc))  # as the body reader makes it
        for limit in range(1, 11):  # the document itself is level 1, never refused
            expected = depth_of(doc) > limit
            assert nests_deeper_py(doc, limit) is expected, (doc, limit)
            assert nests_deeper_c(doc, limit) is expected, (doc, limit)


@built
def test_one_deep_branch_among_wide_shallow_ones_is_found():
    doc = {"messages": [{"role": "user", "content": "hi"}] * 500, "x": [[[[[[[[1]]]]]]]]}
    assert depth_of(doc) == 9
    for version in (nests_deeper_py, nests_deeper_c):
        assert version(doc, 9) is False
        assert version(doc, 8) is True


@built
def test_scalars_and_empty_containers_are_level_one_at_most():
    for version in (nests_deeper_py, nests_deeper_c):
        assert version("[[[[", 0) is False
        assert version(7, 0) is False
        assert version({}, 1) is False
        assert version([[]], 1) is True
        assert version([[]], 2) is False


@built
def test_the_bound_as_the_body_check_applies_it():
    at_bound = b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1)
    for depth, deeper in ((MAX_DEPTH, False), (MAX_DEPTH + 1, True)):
        body = b'{"a":' + at_bound.replace(b"[", b"[[", 1).replace(b"]", b"]]", 1) + b"}" \
            if deeper else b'{"a":' + at_bound + b"}"
        payload = orjson.loads(body)
        assert depth_of(payload) == depth
        assert nests_deeper_c(payload, MAX_DEPTH) is deeper
        assert _too_deep_py(body, payload) is deeper
