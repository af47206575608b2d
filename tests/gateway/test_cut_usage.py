"""A stream that ends without its end (the provider cuts it, or the client leaves) still
records the usage the provider had already reported: the provider bills those tokens."""
from __future__ import annotations

import asyncio
import json

import pytest
from harness import TEST_KEY, auth_headers, http, kraken_mapping, running_kraken, running_mock
from harness import wait_rows
from test_messages import HEADERS, body, claude_stack

pytestmark = pytest.mark.anyio

USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


async def test_openai_stream_cut_after_its_usage_event_records_that_usage(tmp_path):
    """Role, three pieces, finish, usage: then a FIN before ``[DONE]``. The client did not ask
    for usage, so the event stays hidden; the record still has its tokens (and the TPM/billing
    that read them)."""
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port)) as k:
            req = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user",
                   "content": "hi"}], "mock": {"chunks": 3, "drop_after_chunks": 6, "usage": USAGE}}
            r = await http(k.port, "POST", "/v1/chat/completions", json.dumps(req).encode(),
                           auth_headers())
            assert b'"usage":{' in mock.responses[-1].body  # the provider reported it
            assert r.status == 200 and b'"usage":{' not in r.body
            assert r.body.endswith(b"\n\n") and b"event: error" in r.body
            row = (await wait_rows(k.db_path, 1))[0]
            assert row["error_type"] == "upstream_error"
            assert (row["prompt_tokens"], row["completion_tokens"]) == (12, 3)


async def test_anthropic_stream_cut_after_message_start_records_its_input_tokens(tmp_path):
    """``message_start`` carries the input tokens Anthropic bills whatever follows."""
    async with claude_stack(tmp_path) as (_, k):
        usage = {"input_tokens": 40, "output_tokens": 9}
        r = await http(k.port, "POST", "/v1/messages",
                       body(stream=True, mock={"drop_after_chunks": 3, "usage": usage}), HEADERS)
        assert r.status == 200 and b"message_start" in r.body
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["error_type"] == "upstream_error"
        assert row["prompt_tokens"] == 40 and row["cost_usd"] is not None


async def test_anthropic_stream_the_client_leaves_records_its_input_tokens(tmp_path):
    """The client leaves after ``message_start``: the provider call is cancelled at once,
    and its input tokens stay on the record."""
    async with claude_stack(tmp_path, chunk_delay_ms=50) as (_, k):
        payload = body(stream=True, mock={"chunks": 200, "usage": {"input_tokens": 40}})
        reader, writer = await asyncio.open_connection("127.0.0.1", k.port)
        writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: t\r\nx-api-key: %s\r\n"
                     b"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (TEST_KEY.encode(), len(payload), payload))
        seen = b""
        while b"content_block_start" not in seen:  # message_start came before it
            seen += await asyncio.wait_for(reader.read(4096), 10)
        writer.transport.abort()
        row = (await wait_rows(k.db_path, 1))[0]
        assert row["error_type"] == "client_cancelled" and row["status"] == 200
        assert row["prompt_tokens"] == 40 and row["cost_usd"] is not None
