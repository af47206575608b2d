"""Reading an OpenAI Chat Completions request for a translation to another provider's format.

Claude (``anthropic_translate``) and Bedrock Converse (``bedrock_translate``) both rebuild the
request; what the OpenAI side means (its roles, content parts, tool calls, function tools,
sampling fields) is read here once, with the same checks and the same 400s naming the field,
and each translation only says how its own format writes it. Pure code; errors never quote
the request's content.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import orjson

from kraken.errors import BadRequest, InvalidValue, UnsupportedValue

Blocks = list[dict]


def invalid(field: str, rule: str, kind: type[BadRequest] = InvalidValue) -> BadRequest:
    """A 400 naming ``field`` in its message and in ``param`` (the SDKs' ``exc.param``)."""
    return kind(f"'{field}' {rule}", param=field)


def wants_usage_chunk(payload: dict) -> bool:
    """Did the client ask for OpenAI's final usage-only chunk (``stream_options.include_usage``)?"""
    options = payload.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid("stream_options", "must be an object")
    return options.get("include_usage") is True


def check_one_text_choice(payload: dict, n_rule: str, models: str, format_hint: str) -> None:
    """Refuse what a translated answer cannot carry: ``n`` > 1, logprobs, structured output."""
    n = payload.get("n")
    if n is not None and n != 1:
        raise invalid("n", n_rule, UnsupportedValue)
    for key in ("logprobs", "top_logprobs"):
        if payload.get(key):
            raise invalid(key, f"is not available for {models}", UnsupportedValue)
    fmt = payload.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise invalid("response_format", f"other than text is not supported for {models}"
                      f"{format_hint}", UnsupportedValue)


def max_tokens(payload: dict) -> int | None:
    """``max_completion_tokens`` (or the older ``max_tokens``), checked; None when neither."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise invalid(key, "must be a positive integer")
            return value
    return None


def number(payload: dict, key: str) -> int | float | None:
    value = payload.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise invalid(key, "must be a number")
    return value


def stop_sequences(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    raise invalid("stop", "must be a string or an array of strings")


class TurnWriter:
    """How one format writes the blocks of each OpenAI message (``split_turns`` calls these)."""

    text_blocks: Callable[[Any, str], Blocks]
    user_blocks: Callable[[Any, str], Blocks]
    assistant_blocks: Callable[[dict, str], Blocks]
    tool_result: Callable[[dict, str], dict]


def split_turns(raw: list, writer: TurnWriter) -> tuple[Blocks, Blocks]:
    """(system blocks, turns): system/developer messages move to the system prompt, tool results
    become user content, consecutive turns of one role are merged (both formats alternate)."""
    system: Blocks = []
    turns: Blocks = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(where, "must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(writer.text_blocks(message.get("content"), where))
            continue
        if role == "user":
            blocks = writer.user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = writer.assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [writer.tool_result(message, where)]
        else:
            raise invalid(f"{where}.role", "must be one of system, developer, user, assistant, "
                          "tool")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise invalid("messages", "must contain at least one user or assistant message with "
                      "content")
    return system, turns


def content_parts(content: Any, where: str) -> list:
    """A message's ``content`` as a list of parts (a string is one text part)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise invalid(f"{where}.content", "must be a string or an array of content parts")


def text_parts(content: Any, where: str) -> Iterator[tuple[dict, str]]:
    """(part, where) of each text or refusal part, as ``{"text": ...}`` for a refusal; any other
    part is a 400 (system prompts, assistant turns and tool results carry text only)."""
    for j, part in enumerate(content_parts(content, where)):
        here = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise invalid(here, "must be a text part here")
        yield (part if part["type"] == "text" else {"text": part.get("refusal")}), here


def part_text(part: dict, where: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        raise invalid(f"{where}.text", "must be a string")
    return text


def image_url(part: dict, where: str) -> tuple[Any, str]:
    """(url, where) of an ``image_url`` part (the url unchecked: each format has its rules)."""
    image = part.get("image_url")
    return (image.get("url") if isinstance(image, dict) else image), f"{where}.image_url.url"


def tool_calls(message: dict, where: str) -> Iterator[tuple[str, str, dict]]:
    """(id, function name, arguments as an object) of an assistant message's ``tool_calls``."""
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise invalid(f"{where}.tool_calls", "must be an array")
    for j, call in enumerate(calls):
        here = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str) \
                or not isinstance(fn.get("name"), str):
            raise invalid(here, "needs a string 'id' and 'function.name'")
        arguments = fn.get("arguments") or "{}"
        try:
            value = orjson.loads(arguments) if isinstance(arguments, str) else None
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise invalid(f"{here}.function.arguments", "must be a JSON object")
        yield call["id"], fn["name"], value


def tool_call_id(message: dict, where: str) -> str:
    tool_id = message.get("tool_call_id")
    if not isinstance(tool_id, str) or not tool_id:
        raise invalid(f"{where}.tool_call_id", "must be a non-empty string")
    return tool_id


def function_tools(tools: Any) -> Iterator[tuple[dict, dict]]:
    """(function, parameters schema) of each of ``tools`` (a missing schema is an empty object)."""
    if not isinstance(tools, list):
        raise invalid("tools", "must be an array")
    for j, tool in enumerate(tools):
        where = f"tools[{j}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise invalid(f"{where}.type", "must be 'function'")
        fn = tool.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise invalid(f"{where}.function.name", "must be a string")
        schema = fn.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            raise invalid(f"{where}.function.parameters", "must be an object")
        yield fn, schema


def forced_tool(choice: Any) -> str:
    """The function name of a ``{"type": "function", "function": {"name": ...}}`` tool choice;
    anything else (after auto, none and required were handled) is a 400."""
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) \
            and isinstance(choice["function"].get("name"), str):
        return choice["function"]["name"]
    raise invalid("tool_choice", "must be auto, none, required or "
                  "{\"type\": \"function\", \"function\": {\"name\": ...}}")
