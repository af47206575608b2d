"""HTTP/1.1 body framing (RFC 9112 §6.3), with no I/O: one reader per framing.

Request bodies (``http/h1.py``), provider responses (``upstream/response.py``) and the mock
providers all read bodies through these, so there is one chunked decoder and it is strict
everywhere. Kraken frames bodies itself rather than through h11: h11's chunked reader
accepts any byte but LF in a chunk extension, bare LF and obs-fold in trailers, and
unbounded extensions and trailers, each a way for a peer and Kraken to disagree on where a
message ends (request smuggling inbound, a desynchronised pooled connection outbound).

Every reader has ``feed(data, out)``: it appends the body bytes of ``data`` to ``out`` and,
once the body is complete, returns the bytes after it (the next message), else None.

A leaf (imports only ``kraken.speedups``, a leaf too): ``http`` and ``upstream`` both use it and
may not import each other.
"""
from __future__ import annotations

import re

from kraken.speedups import native, pick

NO_LIMIT = 1 << 100
"""A ``ChunkedBody`` limit no body reaches (provider streams are unbounded)."""
_MAX_CHUNK = 1 << 63
"""A chunk size past a signed 64-bit integer is an overflow probe aimed at other servers,
refused as malformed rather than as too large."""
_MAX_CHUNK_LINE = 4096
"""Longest chunk-size line (with its extensions); peers send none, or a few bytes."""
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?").fullmatch
"""RFC 9112 §7.1: hex size, then extensions free of control bytes (no bare CR/LF, no NUL)."""
_TRAILER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*").fullmatch
"""A trailer field: token, colon, no whitespace before it, no control bytes, no obs-fold."""
_HEX = b"0123456789abcdefABCDEF"


def whole_chunks_py(data: bytes) -> tuple[bytes, bool] | None:
    """(body, done) if ``data`` is whole chunks, each size line as ``%x`` writes it and no CRLF
    in a chunk's data, maybe then the last chunk without trailer fields and nothing after it
    (done: True), else None: ``ChunkedBody.whole``'s parse, stateless. The split is the framing's
    only parse when every chunk's length is its size line's: a chunk holding a CRLF splits into
    pieces that do not match. kraken/csrc/plainchunk.c's ``whole_chunks`` (one pass, no pieces
    made) serves where built; tests/test_h1framing.py compares the two."""
    if not data.endswith(b"\r\n"):
        return None
    parts = data.split(b"\r\n")
    parts.pop()  # the nothing after the last CRLF
    done = not parts[-1]
    if done:  # ends with "0", "" (the last chunk's line, the empty line ending the body)
        if len(parts) < 4 or parts[-2] != b"0":
            return None
        del parts[-2:]
    if len(parts) & 1:
        return None
    chunks = parts[1::2]
    lengths = tuple(map(len, chunks))
    # each size line must be its chunk's length as %x writes it: plain (lower-case hex, no
    # leading zero) and matching, in one format and one compare instead of an int() per line
    if 0 in lengths or _SIZES[len(lengths)] % lengths != b",".join(parts[0::2]) + b",":
        return None  # a "0" line is a last chunk before the end: feed_all
    return (chunks[0] if len(chunks) == 1 else b"".join(chunks)), done


class _SizeFormats(dict):
    """``n`` -> ``b"%x," * n``: the size lines of n chunks, as Kraken writes them (kept for
    n <= 64, a read's usual count; larger ones are built each time, so the cache stays small)."""

    def __missing__(self, n: int) -> bytes:
        fmt = b"%x," * n
        if n <= 64:
            self[n] = fmt
        return fmt


_SIZES = _SizeFormats()

whole_chunks_c = native("whole_chunks")
_whole_chunks = pick(whole_chunks_c, whole_chunks_py)


class FramingError(Exception):
    """The body is malformed or over a limit: a server answers ``status`` and closes; a
    client discards the connection."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


class FixedBody:
    """A Content-Length body (or none: length 0)."""

    __slots__ = ("left",)

    def __init__(self, length: int):
        self.left = length

    def feed(self, data: bytes, out: list[bytes]) -> bytes | None:
        left = self.left
        if len(data) < left:
            if data:
                out.append(data)
            self.left = left - len(data)
            return None
        if left:
            out.append(data if len(data) == left else data[:left])
            self.left = 0
            return data[left:]
        return data


class UntilClose:
    """A close-delimited response body: everything until the connection ends (the owner
    learns that from the transport, so ``feed`` never completes it)."""

    __slots__ = ()

    def feed(self, data: bytes, out: list[bytes]) -> bytes | None:
        if data:
            out.append(data)
        return None


_SIZE, _DATA, _DATA_END, _TRAILER = "SIZE", "DATA", "DATA_END", "TRAILER"


class ChunkedBody:
    """A strict ``Transfer-Encoding: chunked`` decoder (RFC 9112 §7.1).

    Refuses what h11 lets through: control bytes in chunk extensions (a bare CR some
    servers take for a line end), whitespace after the size without an extension, chunk
    lines over ``_MAX_CHUNK_LINE``, trailer sections over ``max_trailer`` bytes or with
    bare LF, obs-fold or malformed fields. A declared chunk that would take the body past
    ``limit`` is refused (413) before its bytes arrive. Trailer fields are dropped.

        SIZE ──size > 0──▶ DATA ──size bytes──▶ DATA_END ──CRLF──▶ SIZE
        SIZE ──size 0──▶ TRAILER ──empty line──▶ done

    A chunk whose data and CRLF are already in ``data`` goes SIZE ──▶ SIZE in one step:
    provider streams are mostly one SSE event per chunk, and this path is most of their
    per-chunk cost (bench/chunk_cost.py).
    """

    __slots__ = ("_state", "_left", "_buf", "_limit", "_max_trailer", "_trailer", "size")

    def __init__(self, limit: int, max_trailer: int):
        self._state = _SIZE
        self._left = 0
        self._buf = b""
        """An incomplete line (size, data end or trailer) from the previous read."""
        self._limit = limit
        self._max_trailer = max_trailer
        self._trailer = 0
        self.size = 0
        """Body bytes declared so far."""

    def feed(self, data: bytes, out: list[bytes]) -> bytes | None:
        """As ``FixedBody.feed``; raises ``FramingError``.

        The common read of a paced stream, exactly one whole chunk with a plain size line, is
        taken by ``one`` in one step; anything else goes to ``feed_all``, which checks it in full.
        (``find`` without bounds: its start/end arguments cost more than the scan.)"""
        one = self.one(data)
        if one is None:
            return self.feed_all(data, out)
        out.append(one)
        return None

    def one(self, data: bytes) -> bytes | None:
        """The data of ``data`` if it is exactly one whole chunk with a plain size line (as
        Kraken writes one: lower-case hex, no leading zero) at a chunk boundary (taken, as
        ``feed`` would), else None (nothing taken: call ``feed_all``). A provider stream's
        usual read, without ``feed``'s list; its frame, as received, is the one Kraken would
        write for its data. (Other size lines are rare: ``feed_all`` takes them.)

        One compare checks the size line: it must be the data's length (all that lies between
        the first CRLF and the last two bytes) as ``%x`` writes it, which is plain by
        construction; a line with anything else (an extension, a leading zero, upper case)
        differs. About half the bytecode of parsing the line and comparing it after."""
        if self._state is _SIZE and not self._buf:
            eol = data.find(b"\r\n")
            size = len(data) - eol - 4
            if size > 0 and data.endswith(b"\r\n") and data[:eol] == b"%x" % size:
                total = self.size + size
                if total > self._limit:
                    raise FramingError("request body too large", 413)
                self.size = total
                return data[eol + 2:-2]
        return None

    def whole(self, data: bytes) -> tuple[bytes, bool] | None:
        """(data, done) if ``data`` is whole chunks with plain size lines from a chunk boundary,
        maybe then the last chunk without trailer fields and nothing after it (done: True, the
        body is complete), else None (nothing taken: call ``feed_all``). A provider's whole
        answer, or a burst after a stall, in one read: one C call (``whole_chunks``) instead of
        ``feed_all``'s Python steps per chunk (bench/chunk_cost.py); a read it does not take
        (a chunk holding a CRLF, a size line with a leading zero) goes to ``feed_all``."""
        if self._state is not _SIZE or self._buf:
            return None
        found = _whole_chunks(data)
        if found is None:
            return None
        body = found[0]
        total = self.size + len(body)
        if total > self._limit:
            return None  # feed_all refuses it at the chunk that goes over
        self.size = total
        return found

    def feed_all(self, data: bytes, out: list[bytes]) -> bytes | None:
        """``feed`` for any read: the state machine, byte by byte where it must be."""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, end = 0, len(data)
        state = self._state
        while pos < end:
            if state is _SIZE:
                eol = data.find(b"\r\n", pos)  # unbounded: cheaper than passing the bound
                if eol < 0 or eol - pos > _MAX_CHUNK_LINE:
                    _check_partial_line(data, pos, end)
                    break
                size = self._chunk_size(data, pos, eol)
                pos = eol + 2
                if not size:
                    state = _TRAILER
                    continue
                stop = pos + size
                if stop + 2 <= end:  # the whole chunk is here
                    if data[stop] != 13 or data[stop + 1] != 10:  # CR LF
                        raise FramingError("chunk data not followed by CRLF")
                    out.append(data[pos:stop])
                    pos = stop + 2
                else:
                    self._left = size
                    state = _DATA
            elif state is _DATA:
                n = min(self._left, end - pos)
                out.append(data if n == end else data[pos:pos + n])
                pos += n
                self._left -= n
                if not self._left:
                    state = _DATA_END
            elif state is _DATA_END:
                if data[pos:pos + 2] == b"\r\n":
                    pos += 2
                    state = _SIZE
                elif data[pos:pos + 2] != b"\r":  # not even the start of CRLF
                    raise FramingError("chunk data not followed by CRLF")
                else:
                    break
            else:  # _TRAILER: field lines until an empty one
                eol = self._trailer_line(data, pos, end)
                if eol < 0:
                    break
                if eol == pos:
                    self._state = state
                    return data[pos + 2:]
                pos = eol + 2
        self._state = state
        if pos < end:
            self._buf = data[pos:]
        return None

    def _chunk_size(self, data: bytes, pos: int, eol: int) -> int:
        """The size on the line ``data[pos:eol]``, counted against the limit."""
        line = data[pos:eol]
        if 0 < eol - pos <= 16 and not line.lstrip(_HEX):  # plain hex: no regex needed
            size = int(line, 16)
        else:
            match = _CHUNK_LINE(data, pos, eol)
            if match is None:
                raise FramingError("malformed chunk size line")
            size = int(match[1], 16)
        if size >= _MAX_CHUNK:
            raise FramingError("chunk size overflow")
        total = self.size + size
        if total > self._limit:
            raise FramingError("request body too large", 413)
        self.size = total
        return size

    def _trailer_line(self, data: bytes, pos: int, end: int) -> int:
        """Where the trailer line at ``pos`` ends (its CRLF), or -1 until more arrives."""
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            if self._trailer + end - pos > self._max_trailer:
                raise FramingError("trailer section too large", 431)
            if data.find(b"\n", pos) >= 0:
                raise FramingError("bare LF in trailer section")
            return -1
        if eol > pos:
            self._trailer += eol - pos + 2
            if self._trailer > self._max_trailer:
                raise FramingError("trailer section too large", 431)
            if _TRAILER_LINE(data, pos, eol) is None:
                raise FramingError("malformed trailer field")
        return eol


def _check_partial_line(data: bytes, pos: int, end: int) -> None:
    """A chunk-size line without its CRLF yet: refuse it now if it can never be valid."""
    if end - pos > _MAX_CHUNK_LINE:
        raise FramingError("chunk size line too long")
    if data.find(b"\n", pos) >= 0:
        raise FramingError("bare LF in chunk size line")
