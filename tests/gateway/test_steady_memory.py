"""A long-running Kraken does not grow with the requests it serves.

After a warm-up of every request shape (streamed and not, a stream the client cuts, a provider
error, a stream the provider drops, malformed JSON, an unknown key, an unknown model; requests
one after another on a kept-alive HTTP/1.1 connection and on one HTTP/2 connection), many more
of the same must leave the process holding what the warm-up left: as many allocated blocks and
as many traced bytes, give or take the spread between rounds. One object kept per request (a
missed ``Py_DECREF`` in the C relay under ``kraken/csrc``, a dict keyed by request id, a
callback list that is never emptied) adds at least one block per request and fails this; so
does one float kept per chunk the C pipe relays (tried: a ``Py_INCREF`` too many in
``pipe.c``).

Kraken and the client share this process, so all they hold is counted. The mock provider runs
in a process of its own: it keeps its last exchanges and caches its answers by the second, which
would be counted as growth here."""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import statistics
import subprocess
import sys
import tracemalloc
from typing import AsyncIterator

import h11
import pytest

from h2client import h2c
from harness import (PROVIDER_KEY, TEST_KEY, db_rows, free_port, kraken_mapping, running_kraken,
                     wait_for)

pytestmark = pytest.mark.anyio

PATH = "/v1/chat/completions"
BEARER = f"Bearer {TEST_KEY}"
AUTH = f"Authorization: {BEARER}"
PER_SHAPE = 20
"""Requests of each shape per round."""
WARM_ROUNDS = 8
MEASURED_ROUNDS = 16
EDGE = 5
"""Rounds at each end of the measured ones whose medians are compared."""


def chat(**fields) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
                      | fields).encode()


SHAPES: dict[str, tuple[bytes, str, int | None]] = {
    # name: (body, authorization header, bytes after which the client hangs up; None: read all)
    "answer": (chat(), AUTH, None),
    "stream": (chat(stream=True), AUTH, None),
    "paced stream": (chat(stream=True, mock={"chunks": 8, "chunk_delay_ms": 1}), AUTH, None),
    "stream cut by the client": (
        chat(stream=True, mock={"chunks": 20, "chunk_delay_ms": 5}), AUTH, 600),
    "provider error": (chat(mock={"status": 500}), AUTH, None),
    "stream dropped by the provider": (chat(stream=True, mock={"drop_after_chunks": 2}), AUTH,
                                       None),
    "malformed JSON": (b"{nope", AUTH, None),
    "unknown key": (chat(), "Authorization: Bearer sk-not-a-kraken-key", None),
    "unknown model": (chat(model="no-such-model"), AUTH, None),
}
STATUS = {"answer": 200, "stream": 200, "paced stream": 200, "stream cut by the client": 200,
          "provider error": 502, "stream dropped by the provider": 200, "malformed JSON": 400,
          "unknown key": 401, "unknown model": 404}
RECORDED = {name for name, (_, authorization, _) in SHAPES.items() if authorization == AUTH}
"""Shapes whose requests are admitted (a key that is Kraken's): one record each."""
ONE_CONNECTION = ("answer", "stream", "answer")
"""Shapes asked one after another on one connection (kept alive, or HTTP/2 streams)."""
PER_ROUND_RECORDS = PER_SHAPE * (len(RECORDED) + 2 * len(ONE_CONNECTION))
PER_ROUND_REQUESTS = PER_SHAPE * (len(SHAPES) + 2 * len(ONE_CONNECTION))


async def one(port: int, body: bytes, authorization: str, hang_up_after: int | None) -> bytes:
    """One request on its own connection; what came back (up to ``hang_up_after`` bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {PATH} HTTP/1.1\r\nHost: kraken\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{authorization}\r\n\r\n")
    writer.write(head.encode() + body)
    got = b""
    try:
        async with asyncio.timeout(10):
            while data := await reader.read(65536):
                got += data
                if hang_up_after is not None and len(got) >= hang_up_after:
                    break
    finally:
        writer.close()
    return got


async def kept_alive(port: int, names: tuple[str, ...]) -> list[int]:
    """``names``' requests one after another on one HTTP/1.1 connection; their statuses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn, statuses = h11.Connection(h11.CLIENT), []
    try:
        async with asyncio.timeout(10):
            for name in names:
                body = SHAPES[name][0]
                writer.write(conn.send(h11.Request(method="POST", target=PATH, headers=[
                    ("host", "kraken"), ("content-type", "application/json"),
                    ("content-length", str(len(body))), ("authorization", BEARER)])))
                writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                    if event is h11.NEED_DATA:
                        conn.receive_data(await reader.read(65536))
                    elif isinstance(event, h11.Response):
                        statuses.append(event.status_code)
                conn.start_next_cycle()
    finally:
        writer.close()
    return statuses


async def over_h2(port: int, names: tuple[str, ...]) -> list[int]:
    """``names``' requests one after another as streams of one HTTP/2 connection."""
    async with h2c(port) as client:
        return [(await client.request("POST", PATH, SHAPES[name][0], {
            "content-type": "application/json", "authorization": BEARER})).status
                for name in names]


async def answering(port: int) -> bool:
    """Whether something accepts connections on ``port``."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def mock_process() -> AsyncIterator[int]:
    """``python -m kraken.mock`` on a free port, listening; its port. Stopped on the way out."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kraken.mock", "--port", str(port),
                             "--api-key", PROVIDER_KEY], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(20):
            while not await answering(port):
                assert proc.poll() is None, "the mock provider exited"
                await asyncio.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def stack_config(tmp_path, mock_port: int) -> dict:
    """The test stack without circuit breakers and with room for failed authentications: the
    provider errors this test repeats would open the provider's circuit, its unknown keys would
    reach the per-address limit on failed authentications, and the requests after either would
    be refused instead of served."""
    return kraken_mapping(tmp_path, mock_port,
                          routing={"breaker_failures": 0, "breaker_failure_rate": 0},
                          limits={"ip_auth_failures": 1_000_000})


async def serve_round(port: int, db_path, recorded_before: int) -> int:
    """``PER_SHAPE`` requests of every shape, each answered as ``STATUS`` says, then until
    each admitted one has its record (so that nothing of the round is still in flight); the
    records now in the store."""
    for name, (body, authorization, hang_up_after) in SHAPES.items():
        for _ in range(PER_SHAPE):
            answer = await one(port, body, authorization, hang_up_after)
            assert int(answer[9:12]) == STATUS[name], (name, answer[:200])
    expected = [STATUS[name] for name in ONE_CONNECTION]
    for _ in range(PER_SHAPE):
        assert await kept_alive(port, ONE_CONNECTION) == expected
        assert await over_h2(port, ONE_CONNECTION) == expected
    want = recorded_before + PER_ROUND_RECORDS
    await wait_for(lambda: len(db_rows(db_path)) >= want)
    return want


def held() -> tuple[int, int]:
    """(allocated blocks, traced bytes) once the garbage collector has run."""
    gc.collect()
    return sys.getallocatedblocks(), tracemalloc.get_traced_memory()[0]


async def test_every_shape_answers_as_expected(tmp_path):
    """The shapes the memory test repeats are what they claim to be."""
    async with mock_process() as mock_port, \
            running_kraken(stack_config(tmp_path, mock_port)) as k:
        got = {name: await one(k.port, body, authorization, hang_up_after)
               for name, (body, authorization, hang_up_after) in SHAPES.items()}
        rows = await wait_for(lambda: rows if len(rows := db_rows(k.db_path)) >= len(RECORDED)
                              else None)
    assert {name: int(answer[9:12]) for name, answer in got.items()} == STATUS
    assert got["answer"].endswith(b'"system_fingerprint":"fp_mock"}')
    for streamed in ("stream", "paced stream"):
        assert got[streamed].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    assert b"data: [DONE]" not in got["stream cut by the client"]
    assert b'"type":"upstream_error"' in got["stream dropped by the provider"]
    assert b'"code":"invalid_json"' in got["malformed JSON"]
    assert b'"code":"invalid_api_key"' in got["unknown key"]
    assert b'"code":"model_not_found"' in got["unknown model"]
    assert len(rows) == len(RECORDED)


async def test_memory_does_not_grow_with_requests(tmp_path):
    tracemalloc.start(1)
    try:
        async with mock_process() as mock_port, \
                running_kraken(stack_config(tmp_path, mock_port)) as k:
            recorded = 0
            for _ in range(WARM_ROUNDS):
                recorded = await serve_round(k.port, k.db_path, recorded)
            samples = []
            for _ in range(MEASURED_ROUNDS):
                recorded = await serve_round(k.port, k.db_path, recorded)
                samples.append(held())
    finally:
        tracemalloc.stop()
    blocks = [b for b, _ in samples]
    traced = [t for _, t in samples]
    # requests served between the middles of the first and the last EDGE rounds
    requests = (MEASURED_ROUNDS - EDGE) * PER_ROUND_REQUESTS
    block_growth = statistics.median(blocks[-EDGE:]) - statistics.median(blocks[:EDGE])
    byte_growth = statistics.median(traced[-EDGE:]) - statistics.median(traced[:EDGE])
    # a leak of one block a request would add `requests` blocks, and one kept per HTTP/2 stream
    # alone (a fifth of them) twice the limit; the rounds' spread is up to ~250 blocks and some
    # 20 KB (the loop's transport index, records waiting for a flush)
    assert block_growth < requests / 8, (block_growth, blocks)
    assert byte_growth < requests * 64, (byte_growth, traced)
