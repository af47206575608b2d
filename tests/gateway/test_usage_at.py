"""The SSE tap's usage scan: its Python definition says where a non-null usage object begins,
and the C version (built by ``pip install`` where a C compiler is, as on every test machine)
answers exactly as it does, for every start, odd bytes included."""
from __future__ import annotations

import random

import pytest

from kraken.gateway.sse import usage_at_c, usage_at_py

EVENT = (b'data: {"id":"c1","system_fingerprint":"fp","choices":[{"delta":{"content":"big egg"},'
         b'"logprobs":null}],"usage":null}\n\n')
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'

CASES = [
    (b"", -1),
    (b'"usage":{', 0),
    (b'"usage": {', 0),
    (b'"usage":  {', -1),  # two spaces: not the pattern
    (b'"usage":null', -1),
    (b'"usage":', -1),
    (b'"usage": ', -1),
    (b'usage":{', -1),  # no opening quote
    (b'x"usage":{', 1),
    (EVENT * 3, -1),
    (EVENT + USAGE, len(EVENT) + USAGE.index(b'"usage"')),
    (b'"usag"usage":{', 5),  # a false start just before the key
    (b'ggggg"usage": {', 5),
]


@pytest.mark.parametrize("data, at", CASES)
def test_the_python_definition(data, at):
    assert usage_at_py(data) == at


@pytest.mark.parametrize("data, at", CASES)
def test_c_answers_as_python_does(data, at):
    assert usage_at_c is not None, "the C extension was not built"
    for start in range(-len(data) - 2, len(data) + 3):
        assert usage_at_c(data, start) == usage_at_py(data, start), start
    assert usage_at_c(data) == at


def test_c_and_python_agree_on_random_reads():
    rng = random.Random(13)
    pieces = [EVENT, USAGE, b'"usage":', b'"usage": ', b"{", b" ", b"g", b'"', b"null",
              b"usage", b"\n\n", b"\x00\xff"]
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        start = rng.randint(-3, len(data) + 3)
        assert usage_at_c(data, start) == usage_at_py(data, start), (data, start)


def test_c_refuses_what_python_cannot_take():
    with pytest.raises(TypeError):
        usage_at_c("text")
    with pytest.raises(TypeError):
        usage_at_c(b"", 1.5)
    with pytest.raises(TypeError):
        usage_at_c()
