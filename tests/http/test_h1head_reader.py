"""The request-head parse calls h11's reader without an ``h11.Connection``, and reads common
heads without h11 at all (kraken/http/h1fast.py): for every head of the malformed-request and
smuggling tables, good heads and thousands of mutated ones, each path must answer exactly what
the Connection path answers (same request, same refusal status, same 100-continue flag)."""
from __future__ import annotations

import random

import pytest

from kraken.http import h1head
from kraken.http.h1fast import CommonHead, read_common_head, read_common_head_c, read_common_head_py
from kraken.http.h1head import HeadRejected, parse_head
from test_h1_malformed import MALFORMED
from test_hardening import SMUGGLING

MAX_HEAD, MAX_URI = 16 * 1024, 8 * 1024
GOOD = [
    ("post", b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"),
    ("chunked", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("expect", b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
    ("expect-http10", b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
    ("connect", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
    ("upgrade", b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
    ("close", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    ("http10", b"GET / HTTP/1.0\r\n\r\n"),
]
HEADS = [(name, raw[: raw.find(b"\r\n\r\n") + 4]) for name, raw, *_ in [*MALFORMED, *SMUGGLING]
         if b"\r\n\r\n" in raw] + GOOD


SDK_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    b"User-Agent: OpenAI/Python 1.54.0\r\nX-Stainless-Arch: x64\r\nAuthorization: Bearer kr_x\r\n"
    b"x-stainless-retry-count: 0\r\nX-Empty:\r\nX-Blank-Tail: v \t\r\nContent-Length: 95\r\n\r\n")
GOOD.append(("sdk", SDK_HEAD))


def outcome(head: bytes, parse=parse_head):
    try:
        event, headers, expect = parse(head, MAX_HEAD, MAX_URI)
    except HeadRejected as exc:
        return ("refused", exc.status, str(exc))
    assert headers == tuple(event.headers)  # the pairs made once are h11's own
    return (event.method, event.target, headers, event.http_version, expect)


@pytest.mark.parametrize("head", [pytest.param(h, id=n) for n, h in HEADS])
def test_direct_reader_answers_as_the_h11_connection(head: bytes, monkeypatch):
    assert h1head._read_request_head is not None  # the pinned h11 has the reader
    direct = outcome(head)
    monkeypatch.setattr(h1head, "_read_request_head", None)
    assert outcome(head) == direct


def test_good_heads_parse_with_their_100_continue_flag():
    results = {name: outcome(head) for name, head in GOOD}
    assert results["expect"][4] is True and results["expect-http10"][4] is False
    assert results["post"][:2] == (b"POST", b"/v1/chat/completions")


MUTATIONS = [b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\x0b", b" ", b"\t", b"\r", b"\n",
             b"\r\n", b":", b",", b"[", b"]", b"/", b"@", b"a", b"A", b"0", b"Host: b\r\n",
             b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n", b"Expect: 100-continue\r\n",
             b"HTTP/1.1", b"HTTP/2.0", b"\r\n\r\n", b" \r\n"]


def mutated_heads(count: int, seed: int = 13) -> list[bytes]:
    """Good heads with one to three bytes or fields inserted, replaced or deleted, cut at the
    first blank line as the server cuts them."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        head = bytearray(rng.choice(GOOD)[1])
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(head) - 3)
            edit = rng.random()
            if edit < 0.5:
                head[at:at] = rng.choice(MUTATIONS)
            elif edit < 0.8:
                head[at:at + 1] = rng.choice(MUTATIONS)
            else:
                del head[at]
        end = bytes(head).find(b"\r\n\r\n")
        if end >= 0:
            out.append(bytes(head[:end + 4]))
    return out


@pytest.mark.parametrize("head", [pytest.param(h, id=n) for n, h in HEADS])
def test_common_head_reader_answers_as_h11(head: bytes):
    assert outcome(head) == outcome(head, h1head.parse_head_h11)


def test_common_head_reader_agrees_on_mutated_heads():
    heads = mutated_heads(6000)
    fast = [h for h in heads if read_common_head(h, MAX_URI) is not None]
    assert len(fast) > 600 and len(heads) - len(fast) > 2000  # both paths are exercised
    for head in heads:
        assert outcome(head) == outcome(head, h1head.parse_head_h11), head
    for head in fast:  # the server skips check_head for these: it has nothing to refuse
        common = read_common_head(head, MAX_URI)
        assert h1head.check_head(head) == common.length, head
        # ... and the header scans: what the fast path carries is what they would find
        _, headers, _ = h1head.parse_head_h11(head, len(head) + 1, MAX_URI)
        assert not h1head.is_chunked(headers)
        assert common.content_type == next((v for n, v in headers if n == b"content-type"), None)
        if not common.may_close:
            assert h1head.keeps_alive(common, headers) == (common.http_version == b"1.1")


def test_sdk_heads_take_the_common_path():
    common = read_common_head(SDK_HEAD, MAX_URI)
    assert common is not None
    assert (b"x-blank-tail", b"v") in common.headers and (b"x-empty", b"") in common.headers
    assert dict(common.headers)[b"authorization"] == b"Bearer kr_x"


@pytest.mark.parametrize("line", [
    b"X-A: a\x01b", b"X-A: a\x7f", b"X-A: \x0bb", b"X-A: a\x00", b"X-A: a\rb", b"X-A: a\r",
    b"X\rA: b", b"X-A: a\x1fb", b"X-\x01A: b",
])
def test_a_control_byte_or_bare_cr_in_a_field_line_leaves_the_common_path(line: bytes):
    """The field scan itself refuses these lines (no separate control-byte search): the head
    goes to h11 and the refusals in h1head, which answer it as they would without the fast path."""
    head = b"POST /x HTTP/1.1\r\nHost: a\r\n" + line + b"\r\nContent-Length: 3\r\n\r\n"
    assert read_common_head(head, MAX_URI) is None
    assert outcome(head) == outcome(head, h1head.parse_head_h11)
    assert outcome(head)[0] == "refused"


def test_a_tab_and_obs_text_in_a_value_stay_on_the_common_path():
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nX-A: a\tb \xe9\xff \t\r\nContent-Length: 3\r\n\r\n"
    common = read_common_head(head, MAX_URI)
    assert common is not None and (b"x-a", b"a\tb \xe9\xff") in common.headers
    assert outcome(head) == outcome(head, h1head.parse_head_h11)


@pytest.mark.parametrize("value, may_close, keeps", [
    (b"keep-alive", False, True), (b"Keep-Alive", False, True), (b"upgrade", False, True),
    (b"close", True, False), (b"Keep-Alive, CLOSE", True, False), (b"closed", True, True),
])
def test_only_a_connection_field_holding_close_is_scanned_for_keep_alive(value, may_close, keeps):
    """``Connection: keep-alive`` (what SDKs send) needs no scan; a value holding "close" is
    scanned, and the scan decides (a token ``closed`` is not ``close``)."""
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: " + value + b"\r\nContent-Length: 3\r\n\r\n"
    common = read_common_head(head, MAX_URI)
    assert common.may_close is may_close
    assert h1head.keeps_alive(common, common.headers) is keeps


# ---- the C reader (kraken/csrc/h1fast.c) answers as the Python one ------------------------------
HOSTS = [b"a", b"a:80", b"a:", b"[::1]", b"[::1]:8080", b"[0:A:f]", b"[]", b"[g]", b"[::1", b"a]",
         b"[::1]x", b"a b", b"a:b", b"", b":", b":80", b"\xe9", b"%41", b"a:80:90", b"a@b",
         b"A-Z.~!$&'()*+,;=", b"a\tb", b"[::1]:", b"[:]"]
LENGTHS = [b"0", b"", b"01", b"9" * 18, b"9" * 19, b"1 2", b"+1", b"-1", b"\xef\xbc\x91", b"1\t",
           b" 7 ", b"0x1"]


def variants() -> list[bytes]:
    heads = [h for _, h in HEADS] + mutated_heads(20000, seed=29)
    for host in HOSTS:
        heads.append(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    for length in LENGTHS:
        heads.append(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: " + length + b"\r\n\r\n")
    for name in (b"HOST", b"Content-length", b"TRANSFER-ENCODING", b"expect", b"Connection",
                 b"CONTENT-TYPE", b"X-Host", b"Hos", b"content-lengths"):
        heads.append(b"PUT /x HTTP/1.1\r\nHost: a\r\n" + name + b": close 5\r\n\r\n")
    for fields in (63, 64, 65, 200):  # the C reader keeps 64 fields' offsets, then reads again
        lines = b"".join(b"X-F%d: v%d \t\r\n" % (i, i) for i in range(fields))
        heads.append(b"POST /x HTTP/1.1\r\nHost: a\r\n" + lines + b"Content-Length: 2\r\n"
                     b"Content-Type: text/plain  \r\nConnection: close\r\n\r\n")
    return heads


@pytest.mark.skipif(read_common_head_c is None, reason="the C reader is not built")
@pytest.mark.parametrize("max_uri", [MAX_URI, 1])
def test_c_reader_answers_as_the_python_one(max_uri: int):
    heads = variants()
    common = 0
    for head in heads:
        fast, slow = read_common_head_c(head, max_uri), read_common_head_py(head, max_uri)
        assert fast == slow, head
        if slow is not None:
            common += 1
            assert type(fast) is CommonHead
            assert (fast.method, fast.target, fast.http_version, fast.headers, fast.length,
                    fast.content_type, fast.may_close) == tuple(slow)
    assert common > (1000 if max_uri == MAX_URI else 100)  # both answers are exercised


@pytest.mark.skipif(read_common_head_c is None, reason="the C reader is not built")
def test_c_reader_takes_only_bytes():
    with pytest.raises(TypeError):
        read_common_head_c(bytearray(SDK_HEAD), MAX_URI)
