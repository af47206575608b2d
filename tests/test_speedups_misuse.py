"""kraken._speedups misused by the Python code it calls: a deleted slot, a callback that ends
the pipe or changes the list being read. Kraken's own callers never do these; the C once
crashed on each. Each case runs in a child process and is held to the Python definition's
answer."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kraken import speedups

pytestmark = pytest.mark.skipif(speedups.native("Deadline") is None,
                                reason="the C extension was not built")

ROOT = Path(__file__).resolve().parent.parent


def run(code: str, **env: str) -> str:
    """``code``'s output in a fresh interpreter importing this tree's kraken (``env`` added to
    its environment); fails on a crash."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 0, (done.returncode, done.stderr)
    return done.stdout


def test_a_deadline_whose_handle_was_deleted_refuses_as_the_python_one():
    # deadline.c's arm treated a deleted _handle as None, then stored the new timer over the
    # NULL with Py_SETREF: a segfault, where PyDeadline raises AttributeError
    out = run("""
        from kraken import _speedups, timers

        class Loop:
            def time(self):
                return 1.0

            def call_at(self, when, callback):
                return None

        for version in (timers.PyDeadline, _speedups.Deadline):
            for method in ("arm", "stop"):
                deadline = version(Loop(), lambda: None)
                del deadline._handle
                try:
                    getattr(deadline, method)(*((1.0,) if method == "arm" else ()))
                except AttributeError:
                    print(method, "AttributeError")
                else:
                    print(method, "passed")
        """)
    assert out.split("\n") == ["arm AttributeError", "stop AttributeError"] * 2 + [""]


def test_a_deadline_whose_handle_goes_while_it_is_asked_acts_as_the_python_one():
    # the timer's when() or cancel() deleting the deadline's _handle: arm (which held no
    # reference of its own) cancelled through the NULL, then stored over it
    out = run("""
        from kraken import _speedups, timers

        class Handle:
            def __init__(self, when, doomed):
                self.at, self.doomed = when, doomed

            def when(self):
                if self.doomed == "when":
                    del deadline._handle
                return self.at

            def cancel(self):
                print("cancel", self.at)
                if self.doomed == "cancel":
                    del deadline._handle

        class Loop:
            doomed = None

            def time(self):
                return 1.0

            def call_at(self, when, callback):
                return Handle(when, self.doomed)

        for version in (timers.PyDeadline, _speedups.Deadline):
            for doomed in ("when", "cancel"):
                for end in ("arm", "stop"):
                    loop = Loop()
                    deadline = version(loop, lambda: None)
                    loop.doomed = doomed
                    deadline.arm(10.0)
                    try:
                        deadline.arm(5.0) if end == "arm" else deadline.stop()
                    except AttributeError:
                        print(doomed, end, "AttributeError")
                    handle = getattr(deadline, "_handle", "deleted")
                    print(doomed, end, getattr(handle, "at", handle))
        """).split("\n")
    python, c = out[:len(out) // 2], out[len(out) // 2:-1]
    assert c == python, out


def test_header_value_reads_a_list_its_comparison_changes_as_python_iterates_it():
    # header.c took the list's item array and length once; a key's __eq__ that empties (or
    # grows) the list left it reading freed memory: the stale next pair's value, or a crash
    out = run("""
        from kraken import _speedups
        from kraken.http import exchange

        class Key:
            def __init__(self, change):
                self.change = change

            def __eq__(self, other):
                self.change(headers)
                return False

        for version in (exchange.header_value_py, _speedups.header_value):
            for change in (list.clear, lambda h: h.extend([(b"z", b"z")] * 1000)):
                kept = (b"x", b"y")
                headers = [(Key(change), b"a"), kept]
                print(version(headers, b"x"), len(headers))
        """).split("\n")
    python, c = out[:2], out[2:4]
    assert c == python == ["None 0", "b'y' 1002"], out


def test_a_pipe_ended_while_a_read_reads_the_clock_sends_that_read_to_the_connection():
    # pipe.c read its `write` (borrowed) before its clock call, which may run code that ends or
    # replaces the pipe: it then called the freed writer. UpstreamConnection.data_received (the
    # Python pipe) reads self._pipe after the clock: the read goes to the parser (the
    # connection's data_received) when the pipe ended, to the new writer when replaced.
    out = run("""
        from kraken import _speedups

        READ = b"9\\r\\ndata: x\\n\\n\\r\\n"
        assert _speedups.plain_sse_chunk(READ)

        class Connection:
            def data_received(self, data):
                print("connection", data == READ)

        class Writer:
            def __init__(self, name):
                self.name = name

            def __call__(self, data):
                print("write", self.name, data == READ)

        def clock():
            pipe.write = then
            return 1.0

        for then in (None, Writer("new")):
            pipe = _speedups.PipeProtocol(Connection(), clock)
            pipe.write = Writer("old")
            pipe.data_received(READ)
            print("piped", pipe.take())
        """).split("\n")
    assert out == ["connection True", "piped 0", "write new True", "piped 1", ""], out


def test_a_pipe_cleared_or_never_initialised_hands_reads_on_instead_of_crashing():
    # pipe.c called self->time without a check: NULL after connection_lost cleared the pipe,
    # or in a PipeProtocol never initialised, once `write` was set again
    out = run("""
        from kraken import _speedups

        READ = b"9\\r\\ndata: x\\n\\n\\r\\n"

        class Connection:
            def data_received(self, data):
                print("connection")

            def connection_lost(self, exc):
                print("lost")

        cleared = _speedups.PipeProtocol(Connection(), lambda: 1.0)
        cleared.connection_lost(None)
        bare = _speedups.PipeProtocol.__new__(_speedups.PipeProtocol)
        for pipe in (cleared, bare):
            pipe.write = print
            print(pipe.data_received(READ), pipe.take(), pipe.write)
        """).split("\n")
    assert out == ["lost", "None 0 None", "None 0 None", ""], out


def test_header_value_holds_a_field_its_own_iteration_drops_from_the_list():
    # header.c turned a field that is not a tuple into one through a borrowed reference: the
    # field's __iter__ emptying the list freed it while PySequence_Tuple still used it (its
    # length hint); the debug allocator overwrites freed memory, so that use crashes
    out = run(PYTHONMALLOC="debug", code="""
        from kraken import _speedups
        from kraken.http import exchange

        class Field:
            def __iter__(self):
                headers.clear()
                return iter((b"x", b"y"))

        for version in (exchange.header_value_py, _speedups.header_value):
            headers = [Field()]
            print(version(headers, b"x"), len(headers))
        """).split("\n")
    assert out == ["b'y' 0", "b'y' 0", ""], out
