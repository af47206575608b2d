"""Task type of a request, from its shape only; the label is stored, never the text.

A first cut: the full classifier (code fences, language keywords, system prompt cues) is
part of the routing work. This one only looks at structure, in well under a microsecond.
"""
from __future__ import annotations


def task_type(route: str, payload: dict) -> str:
    if route == "embeddings":
        return "embedding"
    if payload.get("tools") or payload.get("response_format"):
        return "extraction" if payload.get("response_format") else "chat"
    return "chat"
