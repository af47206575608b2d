"""OpenAI Chat Completions requests rewritten as Bedrock Converse requests.

Converse (``POST /model/{modelId}/converse``, AWS Bedrock Runtime API reference) is one shape
for every model family on Bedrock (Claude, Llama, Nova, Mistral, ...), but not OpenAI's: system
prompts sit beside the turns (``system: [{text}]``), content is typed blocks (``text``,
``image`` with raw bytes, ``toolUse``, ``toolResult``), turns must alternate starting with the
user, sampling goes under ``inferenceConfig`` and tools under ``toolConfig``. So, as for Claude
in the OpenAI format (``anthropic_translate`` says why), the request is rebuilt and the answer
re-said (``bedrock_answer``). Pure code; errors name the field and never quote content.
"""
from __future__ import annotations

from typing import Any

import orjson

from kraken.errors import BadRequest, InvalidValue, UnsupportedParameter, UnsupportedValue
from kraken.providers.anthropic_translate import wants_usage_chunk

__all__ = ["chat_to_converse", "wants_usage_chunk"]

_IMAGE_FORMATS = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif",
                  "image/webp": "webp"}
_IGNORED = frozenset({
    "frequency_penalty", "presence_penalty", "seed", "store", "service_tier", "logit_bias",
    "metadata", "prediction", "safety_identifier", "prompt_cache_key", "modalities", "user",
    "parallel_tool_calls", "stream_options",
})
_HANDLED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
    "stream", "tools", "tool_choice", "n", "logprobs", "top_logprobs", "response_format",
})


def _invalid(field: str, rule: str, kind: type[BadRequest] = InvalidValue) -> BadRequest:
    return kind(f"'{field}' {rule}", param=field)


def chat_to_converse(payload: dict) -> dict:
    """The Converse body for an OpenAI chat ``payload`` (``model`` and ``stream`` are not part
    of it: the model is in the path, streaming is the ``/converse-stream`` operation)."""
    for key in payload:
        if key not in _HANDLED and key not in _IGNORED:
            raise _invalid(key[:64], "is not supported for Bedrock models", UnsupportedParameter)
    _check_unsupported(payload)
    system, messages = _messages(payload["messages"])
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config = _inference_config(payload)
    if config:
        body["inferenceConfig"] = config
    tools = _tool_config(payload.get("tools"), payload.get("tool_choice"), messages)
    if tools is not None:
        body["toolConfig"] = tools
    return body


def _check_unsupported(payload: dict) -> None:
    n = payload.get("n")
    if n is not None and n != 1:
        raise _invalid("n", "must be 1 for Bedrock models", UnsupportedValue)
    for key in ("logprobs", "top_logprobs"):
        if payload.get(key):
            raise _invalid(key, "is not available for Bedrock models", UnsupportedValue)
    fmt = payload.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise _invalid("response_format", "other than text is not supported for Bedrock "
                       "models; use tools", UnsupportedValue)


def _inference_config(payload: dict) -> dict:
    config: dict[str, Any] = {}
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _invalid(key, "must be a positive integer")
            config["maxTokens"] = value
            break
    for key, name in (("temperature", "temperature"), ("top_p", "topP")):
        value = payload.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _invalid(key, "must be a number")
            config[name] = value
    stop = payload.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop", "must be a string or an array of strings")
        config["stopSequences"] = stop
    return config


def _messages(raw: list) -> tuple[list[dict], list[dict]]:
    """(system blocks, turns); tool results become user content, consecutive turns of one role
    are merged (Converse alternates roles)."""
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


def _parts(content: Any, where: str) -> list:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise _invalid(f"{where}.content", "must be a string or an array of content parts")


def _text(part: Any, where: str) -> dict | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind not in ("text", "refusal"):
        raise _invalid(where, "must be a text part here")
    text = part.get("text" if kind == "text" else "refusal")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text", "must be a string")
    return {"text": text} if text else None  # Converse rejects empty text blocks


def _text_blocks(content: Any, where: str) -> list[dict]:
    blocks = (_text(p, f"{where}.content[{j}]") for j, p in enumerate(_parts(content, where)))
    return [b for b in blocks if b is not None]


def _user_blocks(content: Any, where: str) -> list[dict]:
    blocks = []
    for j, part in enumerate(_parts(content, where)):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            image = part.get("image_url")
            blocks.append(_image(image.get("url") if isinstance(image, dict) else image,
                                 f"{here}.image_url.url"))
        elif kind == "text":
            block = _text(part, here)
            if block is not None:
                blocks.append(block)
        else:
            raise _invalid(f"{here}.type", "must be text or image_url for Bedrock models")
    return blocks


def _image(url: Any, where: str) -> dict:
    """A base64 data URL as Converse's image block (its JSON carries the bytes as base64)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise _invalid(where, "must be a base64 data URL (Bedrock does not fetch image URLs)")
    head, sep, data = url[5:].partition(",")
    fmt = _IMAGE_FORMATS.get(head[: -len(";base64")].lower()) if head.endswith(";base64") else None
    if not sep or not data or fmt is None:
        raise _invalid(where, "must be a base64 data URL of a JPEG, PNG, GIF or WebP image")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


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
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": fn["name"], "input": value}})
    return blocks


def _tool_result(message: dict, where: str) -> dict:
    tool_id = message.get("tool_call_id")
    if not isinstance(tool_id, str) or not tool_id:
        raise _invalid(f"{where}.tool_call_id", "must be a non-empty string")
    content = message.get("content")
    if isinstance(content, str):
        texts = [{"text": content}] if content else []
    else:
        texts = _text_blocks(content, where)
    return {"toolResult": {"toolUseId": tool_id, "content": texts or [{"text": ""}]}}


def _tool_specs(tools: Any) -> list[dict]:
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
        spec: dict[str, Any] = {"name": fn["name"], "inputSchema": {"json": schema}}
        if isinstance(fn.get("description"), str) and fn["description"]:
            spec["description"] = fn["description"]
        out.append({"toolSpec": spec})
    return out


def _uses_tools(messages: list[dict]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _tool_config(tools: Any, choice: Any, messages: list[dict]) -> dict | None:
    """Converse's ``toolConfig``. It has no "none": the tools are left out instead, unless the
    conversation already holds tool blocks (Converse then requires the tool list)."""
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise _invalid("tool_choice", "needs 'tools'")
        return None
    specs = _tool_specs(tools)
    if choice is None or choice == "auto":
        return {"tools": specs, "toolChoice": {"auto": {}}}
    if choice == "none":
        return {"tools": specs} if _uses_tools(messages) else None
    if choice == "required":
        return {"tools": specs, "toolChoice": {"any": {}}}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        return {"tools": specs, "toolChoice": {"tool": {"name": choice["function"]["name"]}}}
    raise _invalid("tool_choice", "must be auto, none, required or "
                   "{\"type\": \"function\", \"function\": {\"name\": ...}}")
