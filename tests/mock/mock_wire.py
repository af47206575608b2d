"""Raw-socket helpers shared by the mock provider tests: read one HTTP/1.1 response strictly."""
from __future__ import annotations

import asyncio


async def read_response(reader) -> tuple[int, dict, bytes, list[int]]:
    """Read one response strictly; returns status, headers, body and the chunk sizes seen."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    sizes = []
    if headers.get(b"transfer-encoding") == b"chunked":
        assert b"content-length" not in headers
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            sizes.append(size)
            data = await reader.readexactly(size + 2)
            assert data[-2:] == b"\r\n"
            body += data[:-2]
            if size == 0:
                break
    else:
        body = await reader.readexactly(int(headers[b"content-length"]))
    return status, headers, body, sizes


async def raw_exchange(port: int, request: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status, headers, body, _ = await read_response(reader)
        return status, headers, body
    finally:
        writer.close()
