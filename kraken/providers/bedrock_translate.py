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

from kraken.errors import UnsupportedParameter
from kraken.providers import chat_request as req
from kraken.providers.chat_request import invalid as _invalid, wants_usage_chunk

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


def chat_to_converse(payload: dict) -> dict:
    """The Converse body for an OpenAI chat ``payload`` (``model`` and ``stream`` are not part
    of it: the model is in the path, streaming is the ``/converse-stream`` operation)."""
    for key in payload:
        if key not in _HANDLED and key not in _IGNORED:
            raise _invalid(key[:64], "is not supported for Bedrock models", UnsupportedParameter)
    req.check_one_text_choice(payload, "must be 1 for Bedrock models", "Bedrock models",
                              "; use tools")
    system, messages = req.split_turns(payload["messages"], _Converse)
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


def _inference_config(payload: dict) -> dict:
    config: dict[str, Any] = {}
    max_tokens = req.max_tokens(payload)
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    for key, name in (("temperature", "temperature"), ("top_p", "topP")):
        value = req.number(payload, key)
        if value is not None:
            config[name] = value
    stop = payload.get("stop")
    if stop is not None:
        config["stopSequences"] = req.stop_sequences(stop)
    return config


def _text_blocks(content: Any, where: str) -> list[dict]:
    texts = (req.part_text(part, here) for part, here in req.text_parts(content, where))
    return [{"text": text} for text in texts if text]  # Converse rejects empty text blocks


def _user_blocks(content: Any, where: str) -> list[dict]:
    blocks = []
    for j, part in enumerate(req.content_parts(content, where)):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            blocks.append(_image(*req.image_url(part, here)))
        elif kind == "text":
            text = req.part_text(part, here)
            if text:
                blocks.append({"text": text})
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
    for call_id, name, arguments in req.tool_calls(message, where):
        blocks.append({"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}})
    return blocks


def _tool_result(message: dict, where: str) -> dict:
    tool_id = req.tool_call_id(message, where)
    content = message.get("content")
    if isinstance(content, str):
        texts = [{"text": content}] if content else []
    else:
        texts = _text_blocks(content, where)
    return {"toolResult": {"toolUseId": tool_id, "content": texts or [{"text": ""}]}}


class _Converse(req.TurnWriter):
    text_blocks = staticmethod(_text_blocks)
    user_blocks = staticmethod(_user_blocks)
    assistant_blocks = staticmethod(_assistant_blocks)
    tool_result = staticmethod(_tool_result)


def _tool_specs(tools: Any) -> list[dict]:
    out = []
    for fn, schema in req.function_tools(tools):
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
    return {"tools": specs, "toolChoice": {"tool": {"name": req.forced_tool(choice)}}}
