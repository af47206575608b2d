"""An HTTP/2 header block Kraken cannot decode ends the connection, and the DEBUG line saying so
quotes nothing of the block: hpack's error message carries the rest of the block (``data!r``),
which holds the request's other fields - its ``authorization`` among them."""
from __future__ import annotations

import asyncio
import re

import anyio
import hpack
import pytest
from hyperframe.frame import HeadersFrame, SettingsFrame

import logkit
from harness import TEST_KEY, free_port, kraken_mapping

pytestmark = pytest.mark.anyio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER_CANARY = "HEADER-CANARY-5b02c1-never-logged"
OVERLONG_NAME_INDEX = b"\x0f" + b"\x80" * 6
"""A literal field whose name index runs past hpack's integer bound (5 octets): a decoding
error raised while the rest of the block is still unread."""


async def _send_block(port: int, block: bytes) -> bytes:
    """The client preface and one HEADERS frame holding ``block``; what Kraken answers until
    it closes (its GOAWAY)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frame = HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"])
    writer.write(PREFACE + SettingsFrame(0).serialize() + frame.serialize())
    answer = b""
    with anyio.fail_after(10):
        while chunk := await reader.read(65536):
            answer += chunk
    writer.close()
    return answer


async def test_an_undecodable_block_is_logged_without_its_fields_at_debug(tmp_path):
    port = free_port()
    doc = kraken_mapping(tmp_path, 9, server={"port": port}, logging={"level": "debug"})
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions"),
              (b":authority", b"localhost"), (b"authorization", b"Bearer " + TEST_KEY.encode()),
              (b"x-canary", HEADER_CANARY.encode())]
    block = OVERLONG_NAME_INDEX + hpack.Encoder().encode(fields, huffman=False)
    async with logkit.kraken_process(tmp_path, doc) as port:
        answer = await _send_block(port, block)
    assert answer  # Kraken read the frame and ended the connection (GOAWAY)
    log = (tmp_path / "k.stderr.log").read_text() + (tmp_path / "k.stdout.log").read_text()
    assert re.search(r"HTTP/2 connection error from \S+: undecodable header block", log), log
    assert TEST_KEY not in log and HEADER_CANARY not in log
