"""Bytecode instructions Kraken executes per streamed chat request: a profile that noise cannot move.

Timing a change of a few microseconds on a shared machine takes many interleaved runs; the count
of Python bytecode instructions a request executes is exact and repeats, and in a running server
time per request follows it (roughly 20-30 ns an instruction once caches are cold). This runs
Kraken in-process on uvloop (its own config: one OpenAI-compatible provider, the mock as a child
process, one test key), sends --warmup requests on one keep-alive connection, then traces
--requests more with ``sys.settrace`` opcode events and prints instructions per request, by
module and by function (``--inclusive``: each function with everything it called).

    .venv/bin/python bench/opcount.py                       # 200 streamed requests, c=1
    .venv/bin/python bench/opcount.py --new-conn            # a new connection per request
    .venv/bin/python bench/opcount.py --new-upstream        # ... and to the provider (it closes)
    .venv/bin/python bench/opcount.py --non-stream          # non-streamed requests
    .venv/bin/python bench/opcount.py --inclusive --top 60
    .venv/bin/python bench/opcount.py --phases              # split at the send and first byte
    .venv/bin/python bench/opcount.py --chunks 40 --chunk-delay-ms 2 --requests 30  # paced
    .venv/bin/python bench/opcount.py --sdk-fields          # an SDK's 17 header fields, not 5
    .venv/bin/python bench/opcount.py --unspecialised       # hot sites the interpreter could not specialise

The client writes and reads on the loop's transport (C in uvloop); neither its own work, nor
its protocol's callbacks, nor the loop driving it (``run``) is counted. Work driven
by time, not by requests (the record writer's flush every 200 ms, revocation and BYOK polls: the
app's task-group tasks), runs as often as before while the traced requests run ~50x slower, so it
is counted apart, and only its total is shown. The request's own path is exact.

``--phases`` splits a request at its upstream send and at its first client write: what runs
before the send and between the provider's first read and the client's first byte is time to
first byte at c=1; what runs while the provider thinks, or after the first byte, is not.

``--unspecialised`` lists the request's instructions that 3.11's adaptive interpreter left
generic after the untraced warm-up (``dis`` shows them as ``*_ADAPTIVE``): an attribute load on
a class with ``__getattr__``, a global that changed, a call it has no fast form for. Each costs
a dictionary walk (or more) where a specialised one is a guarded read.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dis
import re
import json
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from harness import TEST_KEY, TEST_KEY_HASH, free_port, wait_for  # noqa: E402

from kraken import app, config  # noqa: E402


def kraken_doc(tmp: Path, port: int, mock_port: int) -> dict:
    return {"server": {"host": "127.0.0.1", "port": port}, "store": {"path": str(tmp / "k.db")},
            "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1"}],
            "providers": {"bench": {"kind": "openai_compatible", "api_key": "sk-bench",
                                    "base_url": f"http://127.0.0.1:{mock_port}/v1",
                                    "models": ["mock-gpt"]}},
            "limits": {"trusted_proxies": ["127.0.0.1"]}}


SDK_FIELDS = (b"accept-encoding: gzip, deflate\r\nconnection: keep-alive\r\naccept: application/json\r\n"
              b"user-agent: OpenAI/Python 1.51.0\r\nx-stainless-lang: python\r\n"
              b"x-stainless-package-version: 1.51.0\r\nx-stainless-os: Linux\r\n"
              b"x-stainless-arch: x64\r\nx-stainless-runtime: CPython\r\n"
              b"x-stainless-runtime-version: 3.11.7\r\nx-stainless-async: false\r\n"
              b"x-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\n")
"""The other fields the OpenAI Python SDK sends with a chat request (``--sdk-fields``)."""


class _Reader(asyncio.Protocol):
    """The client's side of the connection: the loop's transport (C in uvloop), whose callbacks
    are skipped by the tracer like ``Client.one`` (the loop's ``sock_*`` calls ran Python socket
    and enum code from its own callbacks, which the tracer counted as Kraken's)."""

    def __init__(self, client: "Client"):
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.received(b"")


class Client:
    """Streamed chat requests on the loop's transport; a new connection per request if asked."""

    def __init__(self, port: int, new_conn: bool, stream: bool = True, delay_ms: float = 0.0,
                 sdk_fields: bool = False, new_upstream: bool = False):
        knobs = {"chunk_delay_ms": delay_ms} if delay_ms else {}
        if new_upstream:  # the mock closes after each answer: every request dials the provider
            knobs["close_after_response"] = True
        paced = {"mock": knobs} if knobs else {}
        body = json.dumps({"model": "mock-gpt", "stream": stream, **paced,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        self.request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n%scontent-type: "
                        b"application/json\r\nauthorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
                        % (SDK_FIELDS if sdk_fields else b"", TEST_KEY.encode(), len(body), body))
        self.port, self.new_conn, self.transport = port, new_conn, None
        self.stream = stream
        self.got, self.done = b"", None

    def _reader(self) -> _Reader:
        return _Reader(self)

    async def one(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport is None or self.new_conn or self.transport.is_closing():
            if self.transport is not None:
                self.transport.close()
            self.transport, _ = await loop.create_connection(self._reader, "127.0.0.1", self.port)
        self.got, self.done = b"", loop.create_future()
        self.transport.write(self.request)
        got = await self.done
        if not got.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {got[:200]!r}")

    def received(self, data: bytes) -> None:
        """A read (b"": the connection closed) on the client's side."""
        if self.done is None or self.done.done():
            return
        if not data:
            self.done.set_exception(ConnectionError("Kraken closed the connection"))
            return
        self.got += data
        if self._complete(self.got):
            self.done.set_result(self.got)


    def _complete(self, got: bytes) -> bool:
        """The whole answer is in: a stream's last chunk, or a Content-Length body."""
        if self.stream:
            return got.endswith(b"\r\n0\r\n\r\n")
        head_end = got.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", got[:head_end])
        return length is not None and len(got) - head_end - 4 >= int(length[1])


PHASES = ("before the send", "waiting for the provider", "provider's read to first byte",
          "after the first byte")
"""A request's phases: the first and third are its time to first byte at c=1."""


BACKGROUND_ENTRIES = frozenset(("TaskHandle._run_coro", "CancelScope._timeout",
                                "CancelScope._deliver_cancellation"))
"""Where background work enters: a task-group task (anyio: the writer, the polls), and the
loop's timer callbacks of their cancel scopes (the writer's ``move_on_after``), which the
loop runs with no task frame below them."""
BACKGROUND_FILES = ("aiosqlite/core.py",)
"""The store driver's callbacks (its thread hands results to the loop)."""


class Tracer:
    """Counts opcode events per function (and, if asked, for every function on the stack)."""

    def __init__(self, inclusive: bool, sites: bool = False):
        self.phase = 0
        """Index into PHASES: moved on by the calls (and the send's return) that start each."""
        self.by_phase: collections.Counter = collections.Counter()  # (phase, code) -> count
        self.own: collections.Counter = collections.Counter()
        self.inclusive: collections.Counter = collections.Counter()
        self.background = 0
        """Instructions of Kraken's background tasks (the record writer, polls): time-driven."""
        self._incl = inclusive
        self.sites: collections.Counter | None = collections.Counter() if sites else None
        """(code, offset) -> count, for ``--unspecialised``."""
        self._skip = {Client.one.__code__, _Reader.data_received.__code__,
                      _Reader.connection_lost.__code__, Client._reader.__code__, run.__code__}

    @staticmethod
    def name(code) -> str:
        path = Path(code.co_filename)
        return f"{path.parent.name}/{path.name}:{code.co_qualname}"

    def __call__(self, frame, event, arg):
        """A new frame: not traced if the client called it, counted as background if a task
        group's task (anyio: the writer, the polls) or one of their timer and driver callbacks
        runs it (``BACKGROUND_ENTRIES``, ``BACKGROUND_FILES``), else as the request's."""
        self._next_phase(frame.f_code.co_qualname)
        caller = frame
        while caller is not None:
            code = caller.f_code
            if code in self._skip:  # the client and what it calls, the driving loop (run)
                return None
            if code.co_qualname in BACKGROUND_ENTRIES or code.co_filename.endswith(
                    BACKGROUND_FILES):
                frame.f_trace_opcodes = True
                return self._background
            caller = caller.f_back
        frame.f_trace_opcodes = True
        return self._request

    def _next_phase(self, name: str) -> None:
        if name == "H1Connection.data_received":
            self.phase = 0  # (a client's read: a request's first, as this client sends)
        elif name == "UpstreamConnection.data_received" and self.phase == 1:
            self.phase = 2
        elif name == "H1Exchange.flush" and self.phase == 2:
            self.phase = 3  # (a response's bytes wait corked until this first flush)

    def _background(self, frame, event, arg):
        if event == "opcode":
            self.background += 1
        return self._background

    def _request(self, frame, event, arg):
        if event == "opcode":
            self.own[frame.f_code] += 1
            self.by_phase[self.phase, frame.f_code] += 1
            if self.sites is not None:
                self.sites[frame.f_code, frame.f_lasti] += 1
            if self._incl:
                seen = set()
                while frame is not None:
                    if frame.f_code not in seen:
                        seen.add(frame.f_code)
                        self.inclusive[frame.f_code] += 1
                    frame = frame.f_back
        elif event == "return" and self.phase == 0 and frame.f_code.co_qualname == \
                "UpstreamConnection.send":
            self.phase = 1
        return self._request


def report_phases(tracer: Tracer, n: int, top: int) -> None:
    for index, phase in enumerate(PHASES):
        rows = [(count, code) for (p, code), count in tracer.by_phase.items() if p == index]
        print(f"{phase}: {sum(count for count, _ in rows) / n:.0f}")
        for count, code in sorted(rows, key=lambda row: -row[0])[:top]:
            print(f"  {count / n:7.0f}  {Tracer.name(code)}")


def report(tracer: Tracer, n: int, top: int) -> None:
    print(f"bytecode instructions per request: {sum(tracer.own.values()) / n:.0f} on the "
          f"request's path, {tracer.background / n:.0f} more in background tasks (time-driven)")
    modules: collections.Counter = collections.Counter()
    for code, count in tracer.own.items():
        modules[Tracer.name(code).split(":")[0]] += count
    print("by module:")
    for name, count in modules.most_common(top // 2):
        print(f"  {count / n:7.0f}  {name}")
    if tracer.inclusive:
        print("inclusive (a function and all it called):")
        for code, count in tracer.inclusive.most_common(top):
            print(f"  {count / n:7.0f}  {Tracer.name(code)}")
    print("own (a function's own instructions):")
    for code, count in tracer.own.most_common(top):
        print(f"  {count / n:7.0f}  {Tracer.name(code)}")


SPECIALISABLE = ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "LOAD_GLOBAL", "BINARY_SUBSCR",
                 "STORE_SUBSCR", "COMPARE_OP", "BINARY_OP", "UNPACK_SEQUENCE", "PRECALL")
"""3.11's instructions with specialised forms (``CALL`` is left out: after a specialised
``PRECALL`` it stays adaptive by design)."""


def report_unspecialised(tracer: Tracer, n: int, top: int) -> None:
    """The request's hottest sites still generic after the warm-up: ``*_ADAPTIVE`` in ``dis``."""
    adaptive: dict = {}
    rows = []
    for (code, offset), count in tracer.sites.items():
        if code not in adaptive:
            adaptive[code] = {i.offset: i for i in dis.get_instructions(code, adaptive=True)}
        ins = adaptive[code].get(offset)
        if ins is not None and ins.opname.endswith("_ADAPTIVE") and \
                ins.opname.removesuffix("_ADAPTIVE") in SPECIALISABLE:
            rows.append((count, code, ins))
    total = sum(count for count, _, _ in rows)
    print(f"unspecialised instructions per request: {total / n:.0f}")
    for count, code, ins in sorted(rows, key=lambda row: -row[0])[:top]:
        print(f"  {count / n:6.1f}  {Tracer.name(code)}:{ins.positions.lineno}  "
              f"{ins.opname} {ins.argrepr}")


async def run(args) -> None:
    mock_port, port = free_port(), free_port()
    mock = subprocess.Popen([sys.executable, "-m", "kraken.mock", "--port", str(mock_port),
                             "--chunks", str(args.chunks)], stdout=subprocess.DEVNULL)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config.from_mapping(kraken_doc(Path(tmp), port, mock_port), "<opcount>", env={})
            loop = asyncio.get_running_loop()
            started, stop = loop.create_future(), asyncio.Event()
            task = loop.create_task(app.serve(cfg, started=started, stop=stop))
            await started
            await wait_for(lambda: _accepts(mock_port))
            client = Client(port, args.new_conn, stream=not args.non_stream,
                            delay_ms=args.chunk_delay_ms, sdk_fields=args.sdk_fields,
                            new_upstream=args.new_upstream)
            for _ in range(args.warmup):
                await client.one()
            tracer = Tracer(args.inclusive, args.unspecialised)
            sys.settrace(tracer)
            try:
                for _ in range(args.requests):
                    await client.one()
            finally:
                sys.settrace(None)
            if args.unspecialised:
                report_unspecialised(tracer, args.requests, args.top)
            elif args.phases:
                report_phases(tracer, args.requests, args.top)
            else:
                report(tracer, args.requests, args.top)
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        mock.terminate()
        mock.wait(10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="traced requests")
    ap.add_argument("--warmup", type=int, default=100, help="untraced requests first")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    ap.add_argument("--sdk-fields", action="store_true",
                    help="send the 17 header fields of the OpenAI Python SDK, not 5")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0,
                    help="the mock's pause between chunks: each chunk its own read, as in a "
                         "slow stream (the relay pipe's case); 0: the mock writes them at once")
    ap.add_argument("--new-conn", action="store_true", help="a new connection per request")
    ap.add_argument("--new-upstream", action="store_true",
                    help="the mock closes its connection after each answer: Kraken dials the "
                         "provider for every request (a burst's first requests do)")
    ap.add_argument("--non-stream", action="store_true", help="non-streamed requests")
    ap.add_argument("--inclusive", action="store_true", help="also count callees (slower)")
    ap.add_argument("--top", type=int, default=40, help="rows per list")
    ap.add_argument("--phases", action="store_true",
                    help="split at the upstream send and the first client write")
    ap.add_argument("--unspecialised", action="store_true",
                    help="list the hot sites the adaptive interpreter left generic")
    uvloop.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
