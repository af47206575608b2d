"""A small HTTP/2 client (h2c with prior knowledge, h2's own client state machine) for tests
that ask the same question over both protocols: one request per stream, the answer whole."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import h2.config
import h2.connection
import h2.events

from harness import Reply


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.reader, self.writer = reader, writer
        self._heads: dict[int, dict[str, str]] = {}
        self._bodies: dict[int, bytearray] = {}
        self._ended: set[int] = set()
        self.writer.write(self.h2.data_to_send())

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
        sid = self.h2.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", "127.0.0.1"), *(headers or {}).items()]
        if method == "CONNECT":  # RFC 9113 §8.5: no :scheme, no :path
            hdrs = [(":method", method), (":authority", "127.0.0.1")]
        if body:
            hdrs.append(("content-length", str(len(body))))
        self.h2.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.h2.send_data(sid, body, end_stream=True)
        self._bodies[sid] = bytearray()
        self.writer.write(self.h2.data_to_send())
        async with asyncio.timeout(timeout):
            while sid not in self._ended:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("connection closed before the answer ended")
                self._receive(data)
        head = self._heads.pop(sid, {":status": "0"})  # 0: reset without an answer
        return Reply(int(head.pop(":status")), head, bytes(self._bodies.pop(sid)))

    def _receive(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                self._heads[event.stream_id] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                self._bodies[event.stream_id] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self._ended.add(event.stream_id)
        self.writer.write(self.h2.data_to_send())


@contextlib.asynccontextmanager
async def h2c(port: int) -> AsyncIterator[H2Client]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield H2Client(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
