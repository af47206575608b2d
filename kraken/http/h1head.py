"""An HTTP/1.1 request head, from raw bytes to an ``h11.Request``, with no I/O.

h11 parses request heads; a fresh ``h11.Connection`` is given each head alone, so its
send-side state machine is never driven. But h11 unfolds obs-fold lines, accepts bare-LF
line endings, merges duplicate or listed Content-Length values and lets Transfer-Encoding
win over Content-Length. A gateway in front of other servers must refuse all of these
(request smuggling), so the raw head is checked once here, with C-speed byte scans only
(about 1 µs for a typical head), and what h11 accepts but a front server may read
differently is refused after its parse.
"""
from __future__ import annotations

import re

import h11

from kraken.http.h1fast import CTL, HOST, CommonHead, read_common_head

try:  # h11's own request-head reader, called without a Connection (see _h11_read)
    from h11._headers import has_expect_100_continue as _expects_100_continue
    from h11._readers import maybe_read_from_IDLE_client as _read_request_head
    from h11._receivebuffer import ReceiveBuffer as _ReceiveBuffer
except ImportError:  # another h11 layout: the public Connection path below
    _read_request_head = None


class HeadRejected(Exception):
    """The head is malformed: answer ``status`` and close the connection."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


def find_head_end(buf: bytearray | bytes, max_head: int, start: int = 0) -> int:
    """Index just past the blank line ending the head, or -1 if more bytes are needed.

    ``start`` is where new bytes may matter: a caller that appends to ``buf`` passes the
    old length minus 3, so a client trickling a head byte by byte costs O(n), not O(n²).
    Raises HeadRejected for bare-LF framing (which h11 would accept) and for heads
    longer than ``max_head`` (431).
    """
    end = buf.find(b"\r\n\r\n", start)
    if end < 0:
        if buf.find(b"\n\n", start) >= 0 or buf.find(b"\n\r\n", start) >= 0:
            raise HeadRejected("bare LF in request head")
        if len(buf) > max_head:
            raise HeadRejected("request head too large", 431)
        return -1
    if end + 4 > max_head:
        raise HeadRejected("request head too large", 431)
    return end + 4


def request_path(head: bytes | bytearray) -> str | None:
    """The path in the request line opening ``head`` (a head refused, or not all there), or
    None when that line is not all there or not ``METHOD /path VERSION``. It only chooses
    the wire format of a refusal (``kraken.http.answers``): nothing else is checked."""
    end = head.find(b"\r\n")
    if end < 0:
        return None
    parts = bytes(head[:end]).split(b" ")
    if len(parts) != 3 or parts[1][:1] != b"/":
        return None
    return target_path(parts[1])


def target_path(target: bytes) -> str:
    """A request target's path (its query left out), as ``Request.path`` reads it."""
    return target.split(b"?", 1)[0].decode("ascii", "replace")


_MAX_LENGTH_DIGITS = 19
"""A Content-Length of more (significant) digits is past 1 << 62, which the server refuses as
too large anyway: refused here, its value never computed (``int`` raises past 4300 digits)."""


def check_head(head: bytes) -> int | None:
    """Reject smuggling-prone heads that h11 would normalise silently.

    Returns the Content-Length (validated: one header, digits only), or None without one;
    the caller compares it with its limit before h11 (which refuses over 20 digits)."""
    if head.count(b"\n") != head.count(b"\r\n"):
        raise HeadRejected("bare LF in request head")
    if b"\n " in head or b"\n\t" in head:
        raise HeadRejected("obsolete line folding")
    lower = head.lower()
    lengths = lower.count(b"\ncontent-length:")
    if lengths:
        if lengths > 1:
            raise HeadRejected("duplicate Content-Length")
        if b"\ntransfer-encoding:" in lower:
            raise HeadRejected("both Transfer-Encoding and Content-Length")
        start = lower.index(b"\ncontent-length:") + 16
        value = lower[start : lower.index(b"\r\n", start)].strip(b" \t")
        if not value.isdigit():
            raise HeadRejected("invalid Content-Length")
        digits = value.lstrip(b"0")
        if len(digits) > _MAX_LENGTH_DIGITS:  # int() refuses past 4300 digits (ValueError)
            raise HeadRejected("request body too large", 413)
        return int(digits or b"0")
    return None


Headers = tuple[tuple[bytes, bytes], ...]


def parse_head(head: bytes, max_head: int, max_uri: int
               ) -> tuple[h11.Request | CommonHead, Headers, bool]:
    """h11's parse of a complete head (already through ``check_head``) and the refusals it
    lacks: the request, its (lower-case name, value) pairs, and whether the client waits
    for 100 Continue. Raises HeadRejected. A head in the common subset is read without h11
    (``kraken.http.h1fast``: the same answer, proven against this path)."""
    common = read_common_head(head, max_uri)
    if common is not None:
        return common, common.headers, False
    return parse_head_h11(head, max_head, max_uri)


def parse_head_h11(head: bytes, max_head: int, max_uri: int) -> tuple[h11.Request, Headers, bool]:
    """The reference path: h11's reader, then the refusals it lacks."""
    try:
        event, expect_continue = _h11_read(head, max_head)
    except h11.ProtocolError as exc:
        # h11's text quotes the offending line, which may be an Authorization header:
        # never echoed (errors.py: messages carry no keys).
        status = exc.error_status_hint if exc.error_status_hint in (414, 431) else 400
        raise HeadRejected("malformed request", status) from None
    if not isinstance(event, h11.Request):  # cannot happen with a complete head
        raise HeadRejected("malformed request")
    if len(event.target) > max_uri:
        raise HeadRejected("request URI too long", 414)
    headers = header_pairs(event)
    _refuse_head(event, headers, head)
    # h11 has refused every Transfer-Encoding but "chunked", and check_head one next to
    # a Content-Length.
    if event.http_version != b"1.1" and is_chunked(headers):
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        raise HeadRejected("Transfer-Encoding in an HTTP/1.0 request")
    return event, headers, expect_continue


def header_pairs(event: h11.Request) -> Headers:
    """The head's (lower-case name, value) pairs as a plain tuple, made once: h11's
    ``Headers`` is a ``collections.abc.Sequence`` whose iteration calls ``__getitem__`` in
    Python per field, and the head is read several times (framing, keep-alive, Host, the
    handler's ``Request``)."""
    items = getattr(event.headers, "_full_items", None)  # h11's (raw, lower, value) list
    if items is None:
        return tuple(event.headers)
    return tuple([(name, value) for _, name, value in items])


def _h11_read(head: bytes, max_head: int) -> tuple[object, bool]:
    """h11's parse of one complete head: the event, and whether it expects 100 Continue.

    A ``Connection`` (about a third of the parse's cost) runs h11's reader for an idle
    client and then only its state machine, which refuses nothing more for a lone request
    head (CONNECT/Upgrade are proposals, Transfer-Encoding was checked by the reader): the
    same reader is called here directly. Its refusals are ``LocalProtocolError`` where the
    Connection re-raises them as ``RemoteProtocolError`` (same text and status hint)."""
    if _read_request_head is None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        conn.receive_data(head)
        event = conn.next_event()
        return event, conn.they_are_waiting_for_100_continue
    buf = _ReceiveBuffer()
    buf += head
    event = _read_request_head(buf)
    return event, event is not None and _expects_100_continue(event)


def _refuse_head(event: h11.Request, headers: Headers, head: bytes) -> None:
    """What h11 accepts but a front server may read differently."""
    if event.http_version[:2] != b"1.":
        raise HeadRejected("HTTP version not supported", 505)
    if CTL.search(head) is not None:
        raise HeadRejected("control character in request head")
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        raise HeadRejected("duplicate Host")
    if hosts and HOST.fullmatch(hosts[0]) is None:
        raise HeadRejected("invalid Host")


_MULTIPART = re.compile(rb"\ncontent-type:[ \t]*multipart/form-data", re.IGNORECASE).search


def may_stream(head: bytes) -> bool:
    """Whether the raw head may be an upload's (a multipart/form-data Content-Type, whatever
    optional whitespace precedes it): its body may pass ``max_body_bytes`` (it streams to a
    handler with its own limit); the parsed head decides (``bodystream.streams_body``)."""
    return _MULTIPART(head) is not None


def is_chunked(headers: Headers) -> bool:
    """Whether the body is chunked (the only Transfer-Encoding h11 lets through)."""
    return any(name == b"transfer-encoding" for name, _ in headers)


def keeps_alive(event: h11.Request, headers: Headers) -> bool:
    """HTTP/1.1 without ``Connection: close``."""
    return event.http_version == b"1.1" and not _has_token(headers, b"connection", b"close")


def skip_empty_lines(buf: bytearray) -> None:
    """RFC 9112 §2.2: ignore empty lines before a request-line (some clients send a CRLF
    after a POST body); h11 would answer "no request line received"."""
    while buf[:2] == b"\r\n":
        del buf[:2]


def _has_token(headers: Headers, name: bytes, token: bytes) -> bool:
    """Whether comma-separated header ``name`` lists ``token`` (case-insensitive)."""
    for key, value in headers:
        if key == name:
            value = value.lower()
            if token in value and any(p.strip() == token for p in value.split(b",")):
                return True
    return False
