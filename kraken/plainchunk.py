"""Is a provider's read a stream's usual one: a whole chunk of whole SSE events, no usage, no
error event?

A streamed answer's provider connection tests every read with ``plain_sse_chunk``; one that
passes goes to the client as it came, without the parser and the tap
(``UpstreamConnection.pipe``). Its definition is the Python below; ``kraken/csrc/plainchunk.c``
is the same test in C, used where it was built (``kraken.speedups``): in a relay of long
streams the test's six calls in Python cost about as much as the rest of the read's Python
together.

A leaf: the upstream connection (which runs it) and the relay (which enables it) both import it.
"""
from __future__ import annotations

import re

from kraken.speedups import native, pick

USAGE_OBJECT = rb'"usage": ?\{'
"""A non-null ``"usage"`` object, compact or spaced: the SSE tap's own test (gateway/sse.py)."""
_usage_object = re.compile(USAGE_OBJECT).search
ERROR_MARK = b'"error"'
"""Held by every provider error event (kraken/providers/stream_failure.py, which the SSE tap
parses): a read holding it goes to the tap, which records the stream as failed."""


def plain_sse_chunk_py(data: bytes) -> bool:
    """True if ``data`` is one whole chunk whose size line is as Kraken writes it (``%x``),
    holding whole SSE events (ending with a blank line), no usage object and no error mark."""
    eol = data.find(b"\r\n")
    # (no ``size > 0`` needed: a size line "0" or "-n" that matches leaves no room for the
    # events' blank line before the chunk's CRLF)
    return (data.endswith(b"\n\n\r\n") and data[:eol] == b"%x" % (len(data) - eol - 4)
            and _usage_object(data) is None and data.find(ERROR_MARK) < 0)


plain_sse_chunk_c = native("plain_sse_chunk")
"""The C version (kraken/csrc/plainchunk.c), or None where it was not built."""
plain_sse_chunk = pick(plain_sse_chunk_c, plain_sse_chunk_py)
