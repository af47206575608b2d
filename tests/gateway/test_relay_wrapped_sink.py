"""A sink wrapped by the gateway (an opted-in stream's cost) sees every relayed byte through its
own ``write``, also when a provider chunk could be sent as received (``write_frame``)."""
from __future__ import annotations

import pytest

from harness import kraken_mapping, running_kraken
from rawprovider import SSE_HEAD, scripted_provider, stream_through

pytestmark = pytest.mark.anyio

EVENTS = [b'data: {"id":"c","choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',
          b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,'
          b'"total_tokens":4}}\n\n', b"data: [DONE]\n\n"]


def provider():
    """Each chunk in a write of its own, read by Kraken on its own (the usage event alone)."""
    frames = [b"%x\r\n%s\r\n" % (len(event), event) for event in EVENTS]
    frames[-1] += b"0\r\n\r\n"
    return scripted_provider([[SSE_HEAD, *frames]], 0.02)


async def test_an_opted_in_stream_gets_its_cost_when_the_usage_chunk_is_a_read_of_its_own(tmp_path):
    server, port = await provider()
    doc = kraken_mapping(tmp_path, port)
    doc["prices"] = {"openai_compatible": {"mock-gpt": {"input": 1.0, "output": 2.0}}}
    async with server:
        async with running_kraken(doc) as k:
            got = await stream_through(k.port, include_usage=True,
                                       headers=b"x-kraken-include-cost: true\r\n")
    # 3 prompt + 1 completion tokens at 1 and 2 USD per million: 0.000005
    assert b'"total_tokens":4,"cost_usd":0.000005}}\n\n' in got
    assert got.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
