"""The common request head, read in two regex passes; everything else goes to h11.

h11 is the reference parser for request heads (``h1head.parse_head``), but its reader costs
~15 µs for a bare head and ~50 µs for the sixteen fields an SDK sends, most of it in
per-field Python. Nearly every real head is in a strict subset of what h11 accepts: a token
method, an origin target of visible ASCII, ``HTTP/1.1`` or ``HTTP/1.0``, fields of a token
name and a value of visible bytes, one Host, no Transfer-Encoding, no Expect. For such a head
``read_common_head`` gives what h11 would (method, target, version, lower-case pairs with the
optional whitespace stripped); for any other head it returns None and h11 decides, so an
unusual or malformed head is always judged by h11 and the refusals in ``h1head``. A common
head cannot hold what ``h1head.check_head`` looks for (bare LF, folded lines, a second
Content-Length, Transfer-Encoding), so the server skips that scan for it.
tests/http/test_h1head_reader.py proves the two agree on every head of the malformed and
smuggling tables and on generated ones. ``kraken/csrc/h1fast.c`` is the same reader in C, used
where it was built (one pass over the head: ~300 bytecode instructions a request less).
"""
from __future__ import annotations

import re
from operator import itemgetter

from kraken.speedups import native, pick

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])\r\n")
_CTL_BYTES = rb"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
CTL = re.compile(rb"[" + _CTL_BYTES + rb"]")
"""Control bytes h11 lets through in field values (it refuses only NUL and whitespace), and no
field value here may hold (with CR and LF outside the line ends): what is left of a value, once
its trailing blanks are cut, is h11's field-content."""
_FIELDS = re.compile(rb"(?m)^(" + _TOKEN + rb"):[ \t]*([^" + _CTL_BYTES + rb"\r\n]*)\r\n")
"""One field per line: a token name, then its value up to the line end. The value holds no
control byte (``CTL``) and no CR or LF, so a line holding one is not a match, and a head has
only whole matched lines when the matches are as many as its LFs (each holds one CR and one LF):
one scan instead of a ``CTL`` search plus CR and LF counts (~1.2 µs of ~5.6 µs a head)."""
HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
"""RFC 9112 §3.2: uri-host [":" port]; no spaces, no userinfo, no second host."""
_TO_H11 = frozenset((b"transfer-encoding", b"expect"))
"""Fields whose handling (chunked framing, 100-continue) is left to h11's reader."""
_SPECIAL = frozenset((b"content-type", b"connection", b"host", b"content-length")) | _TO_H11
"""The names ``read_common_head`` looks at; any other field costs it one set lookup."""
_MAX_LENGTH_DIGITS = 18
"""Longer Content-Length values go to h11, which bounds their digits itself."""

Headers = tuple[tuple[bytes, bytes], ...]


class CommonHead(tuple):
    """The parts of an ``h11.Request`` the server reads, for a head in the common subset: a
    tuple with named fields, so the C reader (``kraken/csrc/h1fast.c``) makes it in one call.

    ``length``: the Content-Length (None: no body framing given), as ``h1head.check_head``
    reads it. ``content_type``: the first Content-Type, read in the same pass (the server
    needs no other scan). ``may_close``: a Connection field holds ``close`` somewhere (only
    then is keep-alive worth a scan: ``Connection: keep-alive``, what SDKs send, cannot end
    the connection)."""

    __slots__ = ()
    method = property(itemgetter(0))
    target = property(itemgetter(1))
    http_version = property(itemgetter(2))
    headers = property(itemgetter(3))
    length = property(itemgetter(4))
    content_type = property(itemgetter(5))
    may_close = property(itemgetter(6))


def read_common_head(head: bytes, max_uri: int) -> CommonHead | None:
    """The head, if it is in the common subset and h11 and ``h1head`` would accept it as
    is; None sends it to the reference path (which may accept or refuse it)."""
    line = _REQUEST_LINE.match(head)
    if line is None or not head.endswith(b"\r\n\r\n"):
        return None
    method, target, version = line.groups()
    if len(target) > max_uri:
        return None
    fields = head[line.end():-2]
    pairs = _FIELDS.findall(fields)
    if fields.count(b"\n") != len(pairs):
        return None  # a line that is not a field, or a control byte, CR or LF inside one
    headers = tuple([(name.lower(), value.rstrip(b" \t")) for name, value in pairs])
    hosts = lengths = 0
    length = content_type = None
    may_close = False
    for name, value in headers:
        if name not in _SPECIAL:
            continue
        if name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"connection":
            may_close = may_close or b"close" in value.lower()
        elif name == b"host":
            hosts += 1
            if HOST.fullmatch(value) is None:
                return None
        elif name == b"content-length":
            lengths += 1
            if len(value) > _MAX_LENGTH_DIGITS or not value.isdigit():
                return None
            length = int(value)
        else:  # Transfer-Encoding, Expect: h11's
            return None
    if hosts > 1 or (hosts == 0 and version == b"1.1") or lengths > 1:
        return None
    return CommonHead((method, target, version, headers, length, content_type, may_close))


read_common_head_py = read_common_head
read_common_head_c = native("read_common_head")
"""The C reader (kraken/csrc/h1fast.c), or None where it was not built."""
if read_common_head_c is not None:
    native("bind_common_head")(CommonHead)  # the type it returns
read_common_head = pick(read_common_head_c, read_common_head_py)
