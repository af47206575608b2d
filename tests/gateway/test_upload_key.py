"""A JSON body naming Kraken's internal upload key is a client's ordinary field: the chat call
is relayed as any other (its body byte for byte), never read as a streamed upload. The key
used to be the string ``"\\0upload"``, which a JSON body can spell (``"\\u0000upload"``): the
request then went out announcing more body to come, and the call ended in a 500."""
from __future__ import annotations

import orjson
import pytest
from harness import auth_headers, http, mock_and_kraken

pytestmark = pytest.mark.anyio


async def test_a_body_spelling_the_upload_key_is_relayed_as_json(tmp_path):
    body = (b'{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}],'
            b'"\\u0000upload":1}')
    async with mock_and_kraken(tmp_path) as (mock, k):
        reply = await http(k.port, "POST", "/v1/chat/completions", body,
                           {**auth_headers(), "content-type": "application/json"})
        assert reply.status == 200, reply.body[:300]
        assert orjson.loads(reply.body)["object"] == "chat.completion"
        assert mock.requests[-1].body == body
