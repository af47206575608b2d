"""The OpenAI mock's legacy completions, moderations, image generations and rerank, each in its
provider's published wire format.

- ``POST /completions`` (OpenAI legacy): a ``text_completion`` object, or a stream of
  ``text_completion`` chunks (one choice per prompt), then the usage chunk (``choices: []``) only
  when ``stream_options.include_usage`` is true, then ``[DONE]``.
- ``POST /moderations`` (OpenAI): ``{id, model, results: [{flagged, categories,
  category_scores, category_applied_input_types}]}``, one result per input; no usage.
- ``POST /images/generations`` (OpenAI): ``{created, data: [...]}``; gpt-image models answer
  ``b64_json`` and ``usage`` (input/output tokens and input details), DALL-E models a ``url``.
- ``POST /rerank``: Jina's/vLLM's ``{id, model, usage: {total_tokens}, results: [{index,
  relevance_score}]}``, or with ``"mock": {"shape": "cohere"}`` (and always at ``/v2/rerank``,
  Cohere's path) Cohere v2's ``{id, results, meta: {api_version, billed_units:
  {search_units}}}``; results by score, cut at ``top_n``.

Content is fake; no input is echoed. ``"mock"`` steering as elsewhere (``status``, ``chunks``,
``usage``, delays); ``image_bytes`` sizes each fake image.
"""
from __future__ import annotations

import base64
import time
from typing import Any

import orjson

from kraken.mock.openai_mock import _load, _mock_error, _usage, default_pieces
from kraken.mock.server import BadRequest, Reply, checked_int, stream_reply

__all__ = ["completions_reply", "images_reply", "moderations_reply", "rerank_reply"]

CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
              "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions",
              "sexual", "sexual/minors", "violence", "violence/graphic")


def _model(body: dict, required: bool = True, default: str = "") -> str:
    model = body.get("model", None if required else default)
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    return model


def _suffix(server: Any) -> str:
    return server._next_id().decode()[9:]


def completions_reply(server: Any, raw: bytes) -> Reply:
    body, mock = _load(raw)
    error = _mock_error(mock)
    if error is not None:
        return server._with_mock(mock, error)
    model = _model(body)
    prompt = body.get("prompt")
    tokens = isinstance(prompt, list) and prompt and isinstance(prompt[0], int)
    if isinstance(prompt, str) or tokens:
        prompts = 1
    elif isinstance(prompt, list) and prompt:
        prompts = len(prompt)
    else:
        raise BadRequest("'prompt' must be a string or a non-empty array.", "prompt")
    chunks = checked_int(mock.get("chunks", server.chunks), "mock.chunks", 0, 100_000)
    pieces = default_pieces(chunks)
    used = _usage(mock.get("usage"), server.prompt_tokens * prompts, len(pieces) * prompts)
    usage = {"prompt_tokens": used[0], "completion_tokens": used[1], "total_tokens": used[2]}
    head = {"id": "cmpl-" + _suffix(server), "object": "text_completion",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_mock"}
    if body.get("stream") is not True:
        choices = [{"text": "".join(pieces), "index": i, "logprobs": None, "finish_reason": "stop"}
                   for i in range(prompts)]
        return server._with_mock(mock, Reply(200, orjson.dumps(
            {**head, "choices": choices, "usage": usage}), rounds=len(pieces)))
    opts = body.get("stream_options")
    asked = isinstance(opts, dict) and opts.get("include_usage") is True
    tail = {"usage": None} if asked else {}

    def event(choices: list) -> bytes:
        return b"data: " + orjson.dumps({**head, "choices": choices, **tail}) + b"\n\n"

    events = [event([{"text": piece, "index": i, "logprobs": None, "finish_reason": None}])
              for piece in pieces for i in range(prompts)]
    events += [event([{"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}])
               for i in range(prompts)]
    if asked:
        events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return server._with_mock(mock, stream_reply(events, n=prompts, rounds=len(pieces)))


def moderations_reply(server: Any, raw: bytes) -> Reply:
    body, mock = _load(raw)
    error = _mock_error(mock)
    if error is not None:
        return server._with_mock(mock, error)
    model = _model(body, required=False, default="omni-moderation-latest")
    data = body.get("input")
    if isinstance(data, str):
        count = 1
    elif isinstance(data, list) and data:
        count = len(data)
    else:
        raise BadRequest("'input' must be a string or a non-empty array.", "input")
    flag = mock.get("flagged") is True
    result = {"flagged": flag,
              "categories": {c: flag and c == "violence" for c in CATEGORIES},
              "category_scores": {c: 0.97 if flag and c == "violence" else 0.0001
                                  for c in CATEGORIES},
              "category_applied_input_types": {c: ["text"] for c in CATEGORIES}}
    return server._with_mock(mock, Reply(200, orjson.dumps(
        {"id": "modr-" + _suffix(server), "model": model, "results": [result] * count})))


def images_reply(server: Any, raw: bytes) -> Reply:
    body, mock = _load(raw)
    error = _mock_error(mock)
    if error is not None:
        return server._with_mock(mock, error)
    model = _model(body, required=False, default="dall-e-2")
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise BadRequest("Missing required parameter: 'prompt'.", "prompt")
    n = checked_int(body.get("n", 1), "n", 1, 10)
    size = checked_int(mock.get("image_bytes", 64), "mock.image_bytes", 1, 16 << 20)
    out: dict = {"created": int(time.time())}
    if model.startswith("gpt-image"):
        image = base64.b64encode(bytes(k % 251 for k in range(size))).decode()
        out["data"] = [{"b64_json": image} for _ in range(n)]
        over = mock.get("usage") if isinstance(mock.get("usage"), dict) else {}
        text = checked_int(over.get("input_tokens", server.prompt_tokens),
                           "mock.usage.input_tokens", 0, 10_000_000)
        output = checked_int(over.get("output_tokens", 272 * n), "mock.usage.output_tokens",
                             0, 10_000_000)
        out["usage"] = {"total_tokens": text + output, "input_tokens": text,
                        "output_tokens": output,
                        "input_tokens_details": {"text_tokens": text, "image_tokens": 0}}
    else:
        out["data"] = [{"url": f"https://images.example.invalid/mock/{i}.png",
                        "revised_prompt": None} for i in range(n)]
    return server._with_mock(mock, Reply(200, orjson.dumps(out)))


def rerank_reply(server: Any, raw: bytes, shape: str | None = None) -> Reply:
    body, mock = _load(raw)
    error = _mock_error(mock)
    if error is not None:
        return server._with_mock(mock, error)
    model = _model(body)
    if not isinstance(body.get("query"), str):
        raise BadRequest("'query' is required.", "query")
    docs = body.get("documents")
    if not isinstance(docs, list) or not docs:
        raise BadRequest("'documents' must be a non-empty array.", "documents")
    top_n = checked_int(body.get("top_n", len(docs)), "top_n", 1, 10_000)
    scores = [round(1.0 / (1 + ((i * 37) % len(docs))), 6) for i in range(len(docs))]
    order = sorted(range(len(docs)), key=lambda i: -scores[i])[:top_n]
    results = [{"index": i, "relevance_score": scores[i]} for i in order]
    rid = "rerank-" + _suffix(server)
    if (shape or mock.get("shape")) == "cohere":
        out = {"id": rid, "results": results,
               "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}
    else:
        tokens = server.prompt_tokens * (1 + len(docs))
        out = {"id": rid, "model": model, "usage": {"total_tokens": tokens}, "results": results}
    return server._with_mock(mock, Reply(200, orjson.dumps(out)))
