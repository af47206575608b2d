"""bench/opcount.py --unspecialised: the request's sites 3.11's adaptive interpreter left generic."""
from __future__ import annotations

import dis
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from opcount import Tracer, report_unspecialised  # noqa: E402


class Forwarding:
    """A load on an instance of a class with ``__getattr__`` is never specialised (3.11)."""

    def __init__(self):
        self.x = 1

    def __getattr__(self, name):
        raise AttributeError(name)


class Plain:
    __slots__ = ("x",)

    def __init__(self):
        self.x = 1


def test_a_load_left_generic_is_listed_and_a_specialised_one_is_not(capsys):
    forwarding, plain = Forwarding(), Plain()

    def read_forwarding():
        return forwarding.x

    def read_plain():
        return plain.x

    for _ in range(200):  # past the adaptive counters' warm-up
        read_forwarding()
        read_plain()
    tracer = Tracer(inclusive=False, sites=True)
    for fn in (read_forwarding, read_plain):
        load = next(i for i in dis.get_instructions(fn) if i.opname == "LOAD_ATTR")
        tracer.sites[fn.__code__, load.offset] += 10  # as if traced over 10 requests
    report_unspecialised(tracer, 10, top=5)
    out = capsys.readouterr().out
    assert "unspecialised instructions per request: 1" in out
    assert "read_forwarding" in out and "LOAD_ATTR_ADAPTIVE x" in out
    assert "read_plain" not in out
