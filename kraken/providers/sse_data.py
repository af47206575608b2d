"""The JSON object an SSE event carries in its ``data:`` lines: what the Anthropic usage
reader and the stream-failure reader both parse, one event at a time."""
from __future__ import annotations

import orjson

__all__ = ["event_json"]


def event_json(event: bytes) -> dict | None:
    """The JSON object of one SSE event's ``data`` (several ``data:`` lines are joined with
    LF), or None: no data, not JSON, or not an object."""
    lines = [line[5:] for line in event.replace(b"\r\n", b"\n").split(b"\n")
             if line.startswith(b"data:")]
    if not lines:
        return None
    payload = lines[0] if len(lines) == 1 else b"\n".join(lines)
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
