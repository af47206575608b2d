"""A streaming chat completion held open by the test: started, read to its first event, and
finished (or dropped) when the test says so. Raw HTTP/1.1 over loopback."""
from __future__ import annotations

import asyncio
import json

import anyio

from harness import auth_headers


class Stream:
    """One slow SSE stream through Kraken; the mock paces it with ``chunk_delay_ms``."""

    def __init__(self, port: int, key: str, *, chunks: int = 10, chunk_delay_ms: float = 100.0):
        self.port = port
        self.body = json.dumps({"model": "mock-gpt", "stream": True,
                                "messages": [{"role": "user", "content": "hi"}],
                                "mock": {"chunks": chunks, "chunk_delay_ms": chunk_delay_ms}}).encode()
        self.headers = auth_headers(key)
        self.received = b""
        self.request_id = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Send the request and read until the first SSE event arrived (the stream is live)."""
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [b"POST /v1/chat/completions HTTP/1.1", b"host: 127.0.0.1",
                b"content-type: application/json", b"connection: close",
                b"content-length: " + str(len(self.body)).encode()]
        head += [f"{k}: {v}".encode() for k, v in self.headers.items()]
        self._writer.write(b"\r\n".join(head) + b"\r\n\r\n" + self.body)
        with anyio.fail_after(timeout):
            while b"data: " not in self.received:
                chunk = await self._reader.read(65536)
                assert chunk, self.received
                self.received += chunk
        assert self.received.startswith(b"HTTP/1.1 200"), self.received[:300]
        for line in self.received.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-request-id":
                self.request_id = value.strip().decode()

    @property
    def done(self) -> bool:
        return b"data: [DONE]" in self.received

    async def finish(self, timeout: float = 60.0) -> bytes:
        """Read to the end of the response (the provider's pace); returns every byte."""
        assert self._reader is not None and self._writer is not None
        with anyio.fail_after(timeout):
            while chunk := await self._reader.read(65536):
                self.received += chunk
        self._writer.close()
        assert self.done, self.received[-300:]
        return self.received
