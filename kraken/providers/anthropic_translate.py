"""OpenAI Chat Completions requests rewritten as Anthropic Messages requests.

A client that only speaks OpenAI's format (``POST /v1/chat/completions``) may name a model served
by an Anthropic provider. Its request is rewritten here as a Messages request, and the answer by
``anthropic_answer`` as a ``chat.completion`` (or a stream of ``chat.completion.chunk`` events).

Why this path re-encodes, against the relay's rule: the two formats differ in structure, not
just in names (system prompt outside the turns, tool results as user content blocks, typed
content blocks, usage split over two events, one SSE event per block delta), so no byte of the
provider's answer can reach an OpenAI client unchanged. The translation stays incremental (see
``anthropic_answer``). Clients that want the provider's bytes use ``POST /v1/messages``.

Pure code, no I/O. Errors name the offending field and never quote the request's content.
"""
from __future__ import annotations

from typing import Any

from kraken.errors import UnsupportedParameter
from kraken.providers import chat_request as req
from kraken.providers.chat_request import invalid as _invalid, wants_usage_chunk

__all__ = ["DEFAULT_MAX_TOKENS", "chat_to_messages", "wants_usage_chunk"]

DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; OpenAI does not. 4096 is within every Claude model's limit."""

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# OpenAI parameters with no Anthropic counterpart that do not change the answer's shape: dropped.
_IGNORED = frozenset({
    "frequency_penalty", "presence_penalty", "seed", "store", "service_tier", "logit_bias",
    "metadata", "prediction", "safety_identifier", "prompt_cache_key", "modalities",
})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
    "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user", "n",
    "logprobs", "top_logprobs", "response_format",
})


def chat_to_messages(payload: dict, model: str, *, passthrough: tuple[str, ...] = ()) -> dict:
    """The Messages request body for an OpenAI chat ``payload`` (already checked by the pipeline
    for ``model``, ``messages`` and ``stream``). ``passthrough`` names extra top-level keys copied
    as they are (the local mock's ``mock`` steering field)."""
    for key in payload:
        if key not in _HANDLED and key not in _IGNORED and key not in passthrough:
            raise _invalid(key[:64], "is not supported for Claude models in the OpenAI format; "
                           "use POST /v1/messages", UnsupportedParameter)
    req.check_one_text_choice(payload, "must be 1 for Claude models (one choice per request)",
                              "Claude models", " in the OpenAI format; use tools or POST /v1/messages")
    system, messages = req.split_turns(payload["messages"], _Claude)
    max_tokens = req.max_tokens(payload)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens or DEFAULT_MAX_TOKENS,
                            "messages": messages}
    if system:
        body["system"] = system
    for key in ("temperature", "top_p"):
        value = req.number(payload, key)
        if value is not None:
            body[key] = value
    stop = payload.get("stop")
    if stop is not None:
        body["stop_sequences"] = req.stop_sequences(stop)
    tools = payload.get("tools")
    if tools is not None:
        body["tools"] = _tools(tools)
    choice = _tool_choice(payload.get("tool_choice"), payload.get("parallel_tool_calls"),
                          bool(body.get("tools")))
    if choice is not None:
        body["tool_choice"] = choice
    user = payload.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise _invalid("user", "must be a string")
        body["metadata"] = {"user_id": user}
    if payload.get("stream") is True:
        body["stream"] = True
    for key in passthrough:
        if key in payload:
            body[key] = payload[key]
    return body


def _text_block(part: dict, where: str) -> dict | None:
    text = req.part_text(part, where)
    if not text:
        return None  # Anthropic rejects empty text blocks
    block: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: Any, where: str) -> list[dict]:
    blocks = (_text_block(part, here) for part, here in req.text_parts(content, where))
    return [b for b in blocks if b is not None]


def _user_blocks(content: Any, where: str) -> list[dict]:
    blocks = []
    for j, part in enumerate(req.content_parts(content, where)):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block = _text_block(part, here)
        elif kind == "image_url":
            url, at = req.image_url(part, here)
            if not isinstance(url, str):
                raise _invalid(at, "must be a string")
            block = _image(url, at)
        elif kind == "file":
            block = _document(part.get("file"), f"{here}.file")
        else:
            raise _invalid(f"{here}.type", "must be text, image_url or file for Claude models")
        if block is not None:
            blocks.append(block)
    return blocks


def _data_url(url: str, where: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL."""
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64") or not data:
        raise _invalid(where, "must be a base64 data URL (data:<type>;base64,...)")
    return head[: -len(";base64")].lower(), data


def _image(url: str, where: str) -> dict:
    if url.startswith("data:"):
        media, data = _data_url(url, where)
        if media not in _IMAGE_TYPES:
            raise _invalid(where, "must be a JPEG, PNG, GIF or WebP image")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("https://", "http://")):  # fetched by the provider, never by Kraken
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _invalid(where, "must be an http(s) URL or a base64 data URL")


def _document(file: Any, where: str) -> dict:
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise _invalid(f"{where}.file_data", "must be a base64 data URL (uploaded file ids "
                       "are not available for Claude models)")
    media, b64 = _data_url(data, f"{where}.file_data")
    if media != "application/pdf":
        raise _invalid(f"{where}.file_data", "must be a PDF")
    return {"type": "document", "source": {"type": "base64", "media_type": media, "data": b64}}


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    blocks = _text_blocks(message.get("content"), where)
    for call_id, name, arguments in req.tool_calls(message, where):
        blocks.append({"type": "tool_use", "id": call_id, "name": name, "input": arguments})
    return blocks


def _tool_result(message: dict, where: str) -> dict:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": req.tool_call_id(message, where)}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        texts = _text_blocks(content, where)
        if texts:
            block["content"] = texts
    return block


class _Claude(req.TurnWriter):
    text_blocks = staticmethod(_text_blocks)
    user_blocks = staticmethod(_user_blocks)
    assistant_blocks = staticmethod(_assistant_blocks)
    tool_result = staticmethod(_tool_result)


def _tools(tools: Any) -> list[dict]:
    out = []
    for fn, schema in req.function_tools(tools):
        entry: dict[str, Any] = {"name": fn["name"], "input_schema": schema}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: Any, has_tools: bool) -> dict | None:
    if choice is None:
        out = {"type": "auto"} if has_tools and parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": req.forced_tool(choice)}
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out
