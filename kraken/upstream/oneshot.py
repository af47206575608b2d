"""One request on a fresh connection, for rare control-plane calls (an OAuth2 token exchange
about once an hour): no pool, no keep-alive, the answer bounded. Provider traffic never goes
through here (``pool`` owns it)."""
from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import h11

__all__ = ["MAX_ANSWER", "post_form"]

MAX_ANSWER = 64 * 1024
"""A longer answer is refused (``ValueError``, as is one that is not HTTP/1.1): a token
answer is a few hundred bytes."""


async def post_form(url: str, form: bytes, timeout_s: float) -> tuple[int, bytes]:
    """One HTTP/1.1 POST of a form (h11 frames it), ``Connection: close``; (status, body).
    TLS verified against the system CAs; ``timeout_s`` bounds the whole exchange."""
    parts = urlsplit(url)
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER)
    request = h11.Request(method="POST", target=target, headers=[
        ("host", parts.netloc), ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "application/json"), ("content-length", str(len(form))),
        ("connection", "close"), ("user-agent", "kraken-gateway")])
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=tls)
        try:
            writer.write(conn.send(request) + conn.send(h11.Data(data=form))
                         + conn.send(h11.EndOfMessage()))
            return await _read_answer(conn, reader)
        except h11.ProtocolError as exc:  # not HTTP/1.1: one error type for the caller
            raise ValueError(f"malformed answer ({exc})") from None
        finally:
            writer.close()


async def _read_answer(conn: h11.Connection, reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, body = 0, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(16384))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_ANSWER:
                raise ValueError("answer too large")
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return status, bytes(body)
