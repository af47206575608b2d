"""W3C trace context: read from the client, written upstream only where it may go.

A client's ``traceparent`` is continued (same trace id, its span as our parent); otherwise a
fresh trace id is drawn. Our span id is drawn when the request arrives, so the provider can be
told its parent before the span itself is built from the finished record. Nothing here
imports OpenTelemetry: this runs on every request while ``[otel]`` is on, and costs two
header lookups and one ``getrandbits``.

Trace context leaks which client called and when, so it goes upstream only to self-hosted
kinds (the operator's own servers) and to providers the operator lists in ``propagate_to``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

__all__ = ["SELF_HOSTED_KINDS", "TraceContext", "incoming", "Propagation"]

SELF_HOSTED_KINDS = frozenset({"openai_compatible", "vllm", "ollama"})
"""Kinds that are the operator's own servers: trace context may reach them by default."""

_TRACEPARENT = re.compile(rb"(?!ff)([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
MAX_TRACESTATE = 512
"""W3C: vendors may cut tracestate at 512 characters; a longer one is dropped, not cut."""
_TRACESTATE_OK = re.compile(rb"[\x20-\x7e]*")
_MEMBER = re.compile(rb"[ \t]*(?:([a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}"
                     rb"@[a-z][a-z0-9_*/-]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}"
                     rb"[\x21-\x2b\x2d-\x3c\x3e-\x7e])?[ \t]*")
"""A W3C tracestate list member (key=value), or an empty one, with optional whitespace."""
MAX_MEMBERS = 32


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One request's place in a trace: ids as integers, the parent's (if any) and ours."""

    trace_id: int
    span_id: int
    parent_span_id: int | None
    """The client's span (its ``traceparent``), or None: we started the trace."""
    parent_sampled: bool | None
    """The client's sampled flag, or None when we started the trace."""
    tracestate: bytes | None
    sampled: bool = True
    """Whether our span is exported (parent-based, else the trace id ratio)."""

    def upstream_headers(self) -> list[tuple[bytes, bytes]]:
        """``traceparent`` naming our span as the provider's parent, and the client's
        ``tracestate`` as received."""
        value = b"00-%032x-%016x-%s" % (self.trace_id, self.span_id,
                                        b"01" if self.sampled else b"00")
        out = [(b"traceparent", value)]
        if self.tracestate:
            out.append((b"tracestate", self.tracestate))
        return out


def _new_id(bits: int) -> int:
    # Unique, not secret: the module's generator (reseeded in forked workers) is fast enough.
    value = 0
    while not value:  # all-zero ids are invalid
        value = random.getrandbits(bits)
    return value


def incoming(traceparent: bytes | None, tracestate: bytes | None, ratio_bound: int) -> TraceContext:
    """The request's trace context. ``ratio_bound``: a new trace is sampled when the low 64 bits
    of its id are below it (OpenTelemetry's TraceIdRatioBased rule, so the SDK agrees)."""
    parent = _parse(traceparent) if traceparent else None
    span_id = _new_id(64)
    if parent is None:
        trace_id = _new_id(128)
        return TraceContext(trace_id, span_id, None, None, None,
                            sampled=(trace_id & 0xFFFFFFFFFFFFFFFF) < ratio_bound)
    trace_id, parent_span, sampled = parent
    state = tracestate if tracestate and len(tracestate) <= MAX_TRACESTATE \
        and _TRACESTATE_OK.fullmatch(tracestate) and _well_formed(tracestate) else None
    return TraceContext(trace_id, span_id, parent_span, sampled, state, sampled=sampled)


def _well_formed(tracestate: bytes) -> bool:
    """W3C's list: at most 32 members, keys unique. A malformed one is dropped (W3C allows
    it) so neither the provider nor the SDK sees it: the SDK's warning quotes it in the log."""
    keys = []
    for member in tracestate.split(b","):
        m = _MEMBER.fullmatch(member)
        if m is None:
            return False
        if m.group(1) is not None:
            keys.append(m.group(1))
    return len(keys) <= MAX_MEMBERS and len(set(keys)) == len(keys)


def _parse(value: bytes) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) from a valid ``traceparent``, else None (a bad one
    starts a new trace, as W3C says)."""
    value = value.strip()
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version = m.group(1)
    if len(value) != 55 and (version == b"00" or value[55:56] != b"-"):
        return None  # version 00 is exactly 55 characters; later ones may append fields
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(m.group(4), 16) & 1)


class Propagation:
    """Which providers receive trace context: self-hosted kinds, and ``propagate_to`` names or
    kinds. Never anyone else."""

    __slots__ = ("_names",)

    def __init__(self, propagate_to: tuple[str, ...] = ()):
        self._names = frozenset(propagate_to)

    def allowed(self, provider_name: str, kind: str) -> bool:
        return kind in SELF_HOSTED_KINDS or kind in self._names or provider_name in self._names
