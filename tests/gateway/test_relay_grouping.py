"""The relay's output for any grouping of a provider's chunks into reads, over real sockets:
whole plain chunks read together leave as their frames (one write), anything else is framed
again, and either way the client gets exactly the provider's event bytes in a well-formed
chunked body."""
from __future__ import annotations

import random

import pytest

from harness import kraken_mapping, running_kraken
from kraken.h1framing import NO_LIMIT, ChunkedBody
from rawprovider import SSE_HEAD, scripted_provider, stream_through

pytestmark = pytest.mark.anyio

USAGE = (b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":%d,'
         b'"total_tokens":%d}}\n\n')


def events(rng: random.Random) -> list[bytes]:
    """A stream's SSE events: content, the usage-only event, [DONE]."""
    n = rng.randint(1, 30)
    out = [b'data: {"id":"c","choices":[{"delta":{"content":"%s"}}],"usage":null}\n\n'
           % (b"w" * rng.randint(0, 40)) for _ in range(n)]
    return out + [USAGE % (n, n + 3), b"data: [DONE]\n\n"]


def framed(rng: random.Random, stream: bytes) -> list[bytes]:
    """``stream`` cut into chunks anywhere (an event may span chunks), most framed as Kraken
    frames one, some with an upper-case, zero-padded or extended size line; the last chunk."""
    chunks, at = [], 0
    while at < len(stream):
        n = rng.choice([rng.randint(1, 300), 10_000])
        data, at = stream[at:at + n], at + n
        shape = rng.choice([b"%x"] * 6 + [b"%X", b"0%x", b"%x;ext=1"])
        if shape == b"%X" and (b"%x" % len(data)).isdigit():
            shape = b"0%x"  # an upper-case line that reads as a plain one is not odd
        chunks.append(shape % len(data) + b"\r\n" + data + b"\r\n")
    return chunks + [rng.choice([b"0\r\n\r\n", b"0\r\nx-t: 1\r\n\r\n"])]


def writes(rng: random.Random, chunks: list[bytes]) -> list[bytes]:
    """The provider's writes: whole chunks grouped, or the bytes cut anywhere."""
    if rng.random() < 0.7:
        out, at = [], 0
        while at < len(chunks):
            n = rng.choice([1, 2, 3, 8, len(chunks)])
            out.append(b"".join(chunks[at:at + n]))
            at += n
        return out
    raw = b"".join(chunks)
    cuts = sorted(set(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(1, 8)))))
    return [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)])]


def provider(replies: list[list[bytes]]):
    """Each request (keep-alive) gets the next reply: the head with its first write, then one
    write each, a pause between so each tends to be a read of its own."""
    return scripted_provider([[SSE_HEAD + reply[0], *reply[1:]] for reply in replies], 0.003)


def body_of(response: bytes) -> bytes:
    """The de-chunked body; the chunked framing must end exactly at the response's end."""
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    out: list[bytes] = []
    assert ChunkedBody(NO_LIMIT, 1024).feed_all(body, out) == b""
    return b"".join(out)


@pytest.mark.parametrize("seed", range(3))
async def test_any_grouping_of_chunks_gives_the_client_the_provider_event_bytes(tmp_path, seed):
    rng = random.Random(seed)
    cases = []
    for _ in range(12):
        evs = events(rng)
        cases.append((evs, writes(rng, framed(rng, b"".join(evs))), rng.random() < 0.5))
    server, port = await provider([w for _, w, _ in cases])
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            for evs, _, include_usage in cases:
                got = body_of(await stream_through(k.port, include_usage=include_usage))
                shown = evs if include_usage else evs[:-2] + evs[-1:]  # usage event hidden
                assert got == b"".join(shown)


async def test_whole_plain_chunks_read_together_leave_as_their_frames(tmp_path):
    evs = events(random.Random(7))
    chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in evs]
    # the head and the first chunk; then all the content chunks in one write; then the rest
    reply = [chunks[0], b"".join(chunks[1:-2]), b"".join(chunks[-2:]) + b"0\r\n\r\n"]
    server, port = await provider([reply])
    async with server:
        async with running_kraken(kraken_mapping(tmp_path, port)) as k:
            got = await stream_through(k.port, include_usage=True)
    body = got.partition(b"\r\n\r\n")[2]
    # as the provider framed them, not as one chunk of their joined data
    assert body.startswith(b"".join(chunks[:-2]))
    assert body_of(got) == b"".join(evs)
