"""The OpenAI mock's ``POST /v1/responses`` (Responses API), in the real wire format.

A plain answer is one ``response`` object; a stream is the documented event sequence, each event
``event: <type>`` + ``data: {...,"type":<type>,"sequence_number":n}``: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` (one per piece), ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, ``response.completed`` — only the
last carries ``usage`` (``input_tokens``, ``input_tokens_details.cached_tokens``,
``output_tokens``, ``output_tokens_details.reasoning_tokens``, ``total_tokens``). Content is
fake ("tok0 tok1 ..."); the input is never echoed.

``"mock"`` steering as elsewhere: ``status``, ``chunks``, ``usage`` (``input_tokens``,
``output_tokens``, ``cached_tokens``, ``reasoning_tokens``), delays and drops.
"""
from __future__ import annotations

import time
from typing import Any

import orjson

from kraken.mock.openai_mock import _load, _mock_error
from kraken.mock.server import BadRequest, Reply, stream_reply

__all__ = ["build_response", "build_response_events", "responses_reply"]


def _count(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000_000:
        raise BadRequest(f"'{name}' must be a non-negative integer.", name)
    return value


def _usage(over: Any, prompt: int, output: int) -> dict:
    over = over if isinstance(over, dict) else {}
    inp = _count(over.get("input_tokens"), "mock.usage.input_tokens", prompt)
    out = _count(over.get("output_tokens"), "mock.usage.output_tokens", output)
    cached = _count(over.get("cached_tokens"), "mock.usage.cached_tokens", 0)
    reasoning = _count(over.get("reasoning_tokens"), "mock.usage.reasoning_tokens", 0)
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": inp + out}


def _response(rid: str, model: str, created: int, status: str, output: list, usage: dict | None) -> dict:
    return {"id": rid, "object": "response", "created_at": created, "status": status,
            "error": None, "incomplete_details": None, "instructions": None,
            "max_output_tokens": None, "model": model, "output": output,
            "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
            "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}


def _message(mid: str, text: str, status: str) -> dict:
    content = [{"type": "output_text", "annotations": [], "text": text}] if status == "completed" else []
    return {"id": mid, "type": "message", "status": status, "role": "assistant", "content": content}


def build_response(rid: str, model: str, pieces: list[str], usage: dict) -> bytes:
    text = "".join(pieces)
    return orjson.dumps(_response(rid, model, int(time.time()), "completed",
                                  [_message("msg_" + rid[5:], text, "completed")], usage))


def build_response_events(rid: str, model: str, pieces: list[str], usage: dict) -> list[bytes]:
    created = int(time.time())
    mid = "msg_" + rid[5:]
    text = "".join(pieces)
    seq = 0
    events = []

    def event(kind: str, **fields: Any) -> None:
        nonlocal seq
        events.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(
            {"type": kind, "sequence_number": seq, **fields}) + b"\n\n")
        seq += 1

    event("response.created", response=_response(rid, model, created, "in_progress", [], None))
    event("response.in_progress", response=_response(rid, model, created, "in_progress", [], None))
    event("response.output_item.added", output_index=0, item=_message(mid, "", "in_progress"))
    part = {"type": "output_text", "annotations": [], "text": ""}
    event("response.content_part.added", item_id=mid, output_index=0, content_index=0, part=part)
    for piece in pieces:
        event("response.output_text.delta", item_id=mid, output_index=0, content_index=0,
              delta=piece, logprobs=[])
    event("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text,
          logprobs=[])
    event("response.content_part.done", item_id=mid, output_index=0, content_index=0,
          part={**part, "text": text})
    done = _message(mid, text, "completed")
    event("response.output_item.done", output_index=0, item=done)
    event("response.completed", response=_response(rid, model, created, "completed", [done], usage))
    return events


def responses_reply(server: Any, raw: bytes) -> Reply:
    """The mock's answer to one ``POST /responses`` (``server`` is the ``MockOpenAI``)."""
    body, mock = _load(raw)
    error = _mock_error(mock)
    if error is not None:
        return server._with_mock(mock, error)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("Missing required parameter: 'model'.", "model")
    data = body.get("input")
    if not isinstance(data, (str, list)) or not data:
        raise BadRequest("Missing required parameter: 'input'.", "input")
    chunks = _count(mock.get("chunks"), "mock.chunks", server.chunks)
    pieces = [f"tok{i} " for i in range(chunks)]
    usage = _usage(mock.get("usage"), server.prompt_tokens, chunks)
    rid = "resp_" + server._next_id().decode()[9:]
    if body.get("stream") is True:
        reply = stream_reply(build_response_events(rid, model, pieces, usage), rounds=len(pieces))
    else:
        reply = Reply(200, build_response(rid, model, pieces, usage), rounds=len(pieces))
    return server._with_mock(mock, reply)
