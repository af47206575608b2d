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

import orjson

from kraken.errors import BadRequest, InvalidValue, UnsupportedParameter, UnsupportedValue

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


# ---- request -----------------------------------------------------------------------------------


def _invalid(field: str, rule: str, kind: type[BadRequest] = InvalidValue) -> BadRequest:
    """A 400 naming ``field`` in its message and in ``param`` (the SDKs' ``exc.param``)."""
    return kind(f"'{field}' {rule}", param=field)


def chat_to_messages(payload: dict, model: str, *, passthrough: tuple[str, ...] = ()) -> dict:
    """The Messages request body for an OpenAI chat ``payload`` (already checked by the pipeline
    for ``model``, ``messages`` and ``stream``). ``passthrough`` names extra top-level keys copied
    as they are (the local mock's ``mock`` steering field)."""
    for key in payload:
        if key not in _HANDLED and key not in _IGNORED and key not in passthrough:
            raise _invalid(key[:64], "is not supported for Claude models in the OpenAI format; "
                           "use POST /v1/messages", UnsupportedParameter)
    _check_unsupported(payload)
    system, messages = _messages(payload["messages"])
    body: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(payload), "messages": messages}
    if system:
        body["system"] = system
    for key in ("temperature", "top_p"):
        value = payload.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _invalid(key, "must be a number")
            body[key] = value
    stop = payload.get("stop")
    if stop is not None:
        body["stop_sequences"] = _stop(stop)
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


def wants_usage_chunk(payload: dict) -> bool:
    """Did the client ask for OpenAI's final usage-only chunk (``stream_options.include_usage``)?"""
    options = payload.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _invalid("stream_options", "must be an object")
    return options.get("include_usage") is True


def _check_unsupported(payload: dict) -> None:
    n = payload.get("n")
    if n is not None and n != 1:
        raise _invalid("n", "must be 1 for Claude models (one choice per request)",
                       UnsupportedValue)
    for key in ("logprobs", "top_logprobs"):
        if payload.get(key):
            raise _invalid(key, "is not available for Claude models", UnsupportedValue)
    fmt = payload.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise _invalid("response_format", "other than text is not supported for Claude models "
                       "in the OpenAI format; use tools or POST /v1/messages", UnsupportedValue)


def _max_tokens(payload: dict) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _invalid(key, "must be a positive integer")
            return value
    return DEFAULT_MAX_TOKENS


def _stop(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise _invalid("stop", "must be a string or an array of strings")


def _messages(raw: list) -> tuple[list[dict], list[dict]]:
    """(system blocks, turns): system/developer messages move to ``system``; tool results become
    user content; consecutive turns of one role are merged (Anthropic alternates roles)."""
    system: list[dict] = []
    turns: list[dict] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(where, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, where)]
        else:
            raise _invalid(f"{where}.role", "must be one of system, developer, user, assistant, "
                           "tool")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise _invalid("messages", "must contain at least one user or assistant message with "
                       "content")
    return system, turns


def _text_block(part: dict, where: str) -> dict | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text", "must be a string")
    if not text:
        return None  # Anthropic rejects empty text blocks
    block: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _parts(content: Any, where: str) -> list:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise _invalid(f"{where}.content", "must be a string or an array of content parts")


def _text_blocks(content: Any, where: str) -> list[dict]:
    blocks = []
    for j, part in enumerate(_parts(content, where)):
        here = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise _invalid(here, "must be a text part here")
        if part["type"] == "refusal":
            part = {"text": part.get("refusal")}
        block = _text_block(part, here)
        if block is not None:
            blocks.append(block)
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict]:
    blocks = []
    for j, part in enumerate(_parts(content, where)):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            block = _text_block(part, here)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise _invalid(f"{here}.image_url.url", "must be a string")
            block = _image(url, f"{here}.image_url.url")
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
    calls = message.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise _invalid(f"{where}.tool_calls", "must be an array")
    for j, call in enumerate(calls):
        here = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str) \
                or not isinstance(fn.get("name"), str):
            raise _invalid(here, "needs a string 'id' and 'function.name'")
        arguments = fn.get("arguments") or "{}"
        try:
            value = orjson.loads(arguments) if isinstance(arguments, str) else None
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise _invalid(f"{here}.function.arguments", "must be a JSON object")
        blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"], "input": value})
    return blocks


def _tool_result(message: dict, where: str) -> dict:
    tool_id = message.get("tool_call_id")
    if not isinstance(tool_id, str) or not tool_id:
        raise _invalid(f"{where}.tool_call_id", "must be a non-empty string")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        texts = _text_blocks(content, where)
        if texts:
            block["content"] = texts
    return block


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    out = []
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise _invalid(f"{where}.type", "must be 'function'")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _invalid(f"{where}.function.name", "must be a string")
        schema = fn.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            raise _invalid(f"{where}.function.parameters", "must be an object")
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
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _invalid("tool_choice", "must be auto, none, required or "
                       "{\"type\": \"function\", \"function\": {\"name\": ...}}")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out
