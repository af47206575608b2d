"""Every answer of the client listener carries ``x-request-id`` (README: "Every answer carries
x-request-id"), over HTTP/1.1 and HTTP/2 alike: relayed answers, Kraken's own endpoints, 404s,
405s (which also say ``Allow``) and the transport's own refusals."""
from __future__ import annotations

import asyncio
import re

import pytest
from h2client import h2c
from harness import auth_headers, http

pytestmark = pytest.mark.anyio

REQUEST_ID = re.compile(r"req_[0-9a-f]{24}")
CHAT = b'{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}'
ANSWERS = [
    # (method, path, body, with key, status, Allow)
    ("POST", "/v1/chat/completions", CHAT, True, 200, None),
    ("POST", "/v1/chat/completions", CHAT, False, 401, None),
    ("GET", "/v1/models", b"", True, 200, None),
    ("GET", "/healthz", b"", False, 200, None),
    ("GET", "/readyz", b"", False, 200, None),
    ("GET", "/metrics", b"", False, 200, None),
    ("GET", "/v1/nowhere", b"", True, 404, None),
    ("GET", "/v1/chat/completions", b"", True, 405, {"POST"}),
    ("DELETE", "/v1/models", b"", True, 405, {"GET", "HEAD"}),
    ("GET", "/v1/messages", b"", True, 405, {"POST"}),
    ("GET", "/v1beta/models/gemini-x:generateContent", b"", True, 405, {"POST"}),
]


def check(replies) -> None:
    ids = []
    for (method, path, _, _, status, allow), reply in zip(ANSWERS, replies):
        where = f"{method} {path}"
        assert reply.status == status, (where, reply.status, reply.body[:200])
        rid = reply.headers.get("x-request-id", "")
        assert REQUEST_ID.fullmatch(rid), (where, reply.headers)
        ids.append(rid)
        if allow is not None:
            assert set(reply.headers["allow"].split(", ")) == allow, (where, reply.headers)
    assert len(set(ids)) == len(ids), "one id per answer"


async def test_every_answer_over_http1_carries_a_request_id(stack):
    _, k = stack
    replies = [await http(k.port, method, path, body, auth_headers() if key else None)
               for method, path, body, key, _, _ in ANSWERS]
    check(replies)


async def test_every_answer_over_http2_carries_a_request_id(stack):
    _, k = stack
    async with h2c(k.port) as client:
        replies = [await client.request(method, path, body, auth_headers() if key else None)
                   for method, path, body, key, _, _ in ANSWERS]
    check(replies)


async def test_transport_refusals_carry_a_request_id(stack):
    """Answers the transports give on their own, before any gateway code runs."""
    _, k = stack
    reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bad host\r\n\r\n")
    async with asyncio.timeout(10):
        head = (await reader.read(65536)).split(b"\r\n\r\n")[0].decode().lower()
    writer.close()
    assert head.startswith("http/1.1 400")
    assert re.search(r"\r\nx-request-id: req_[0-9a-f]{24}(\r\n|$)", head), head
    async with h2c(k.port) as client:
        reply = await client.request("CONNECT", "", headers=None)
    assert reply.status == 405, reply
    assert REQUEST_ID.fullmatch(reply.headers.get("x-request-id", "")), reply.headers
    assert "allow" in reply.headers


def test_request_ids_stay_unique_and_well_formed_across_random_blocks():
    from kraken.gateway.call import new_request_id

    ids = [new_request_id() for _ in range(3 * 256 + 7)]  # crosses several 256-id reads
    assert all(REQUEST_ID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_request_ids_start_with_the_time_so_later_ids_sort_after_earlier_ones():
    """The store's request_id index takes a batch in a few adjacent pages (bench/writer_bench.py);
    the 13 hex digits after the time stay random, so ids made in one millisecond still differ."""
    import time

    from kraken.gateway.call import new_request_id

    before = time.time_ns() // 1_000_000
    first = [new_request_id() for _ in range(300)]
    newest = max(int(i[4:15], 16) for i in first)
    deadline = time.monotonic() + 1
    while time.time_ns() // 1_000_000 <= newest and time.monotonic() < deadline:
        pass  # until the clock is past the newest id's millisecond (bounded)
    later = new_request_id()
    after = time.time_ns() // 1_000_000
    assert all(before <= int(i[4:15], 16) <= after for i in first + [later])
    assert max(first) < later
    assert len({i[15:] for i in first}) == len(first)


def test_a_forked_child_does_not_hand_out_its_parents_next_ids():
    import os

    from kraken.gateway.call import new_request_id

    new_request_id()  # a block is held, most of its ids not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, to the parent, then out without cleanup
        os.close(read)
        os.write(write, " ".join(new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    parent = [new_request_id() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
