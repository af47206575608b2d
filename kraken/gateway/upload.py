"""An upload relayed as it arrives: read as far as ``model``, then pumped to the provider.

``Upload.open`` reads the start of a streamed ``multipart/form-data`` body (bounded, see
``kraken.gateway.multipart``) until the ``model`` field is whole; the engine routes on it.
The upstream request then carries those first bytes (``model`` re-written when the route's
upstream name differs) and ``relay`` pumps the rest in the chunks the client sent, each only
once the provider's socket takes it (``writable``), so memory stays bounded whatever the size.
Past ``limit`` bytes (declared or counted) the answer is 413: before anything is sent when the
Content-Length says so, else the provider exchange is cut and nothing more is relayed.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kraken.errors import InvalidValue, KrakenError, PayloadTooLarge
from kraken.gateway.multipart import MORE, Field, boundary_of, find_field
from kraken.http.exchange import Request

__all__ = ["UPLOAD", "Upload", "UploadLimits"]

UPLOAD = object()
"""The payload key of an upload's ``Upload``: not a string, so no JSON body's key is it (a
string such as ``"\\0upload"`` is spelled ``"\\u0000upload"`` in JSON)."""


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """The largest upload per kind (``[server] max_audio_bytes``, ``max_file_bytes``)."""

    audio: int = 25 * 1024 * 1024
    file: int = 512 * 1024 * 1024


class Upload:
    """One streamed request body: its first bytes (held), and the rest still to come."""

    __slots__ = ("req", "limit", "prefix", "field", "declared", "sent")

    def __init__(self, req: Request, limit: int, prefix: bytes, field: Field):
        self.req, self.limit, self.prefix, self.field = req, limit, prefix, field
        self.declared = req.body_stream.declared if req.body_stream is not None else len(req.body)
        self.sent = len(prefix)

    @property
    def model(self) -> str:
        return self.field.value.decode("utf-8", "replace")

    @classmethod
    async def open(cls, req: Request, limit: int, name: bytes = b"model") -> Upload:
        """Read until field ``name`` is whole; 400 naming it when it does not come first."""
        boundary = boundary_of(req.header(b"content-type"))
        stream = req.body_stream
        if stream is None:  # a small body that arrived whole (e.g. a test client)
            buf = req.body
            if len(buf) > limit:
                raise _too_large(limit)
        else:
            if stream.declared is not None and stream.declared > limit:
                raise _too_large(limit)
            buf = b""
        while True:
            found = find_field(buf, boundary, name)
            if isinstance(found, Field):
                if not found.value or len(found.value) > 256:
                    break
                return cls(req, limit, buf, found)
            if found is not MORE or stream is None:
                break
            data = await _read(stream)
            if not data:
                break
            buf += data
            if len(buf) > limit:
                raise _too_large(limit)
        field = name.decode()
        raise InvalidValue(f"'{field}' is required: send it as a form field before the file",
                           param=field)

    def first_bytes(self, model: str) -> bytes:
        """The held start of the body with ``model`` as the field's value."""
        value = model.encode()
        if value == self.field.value:
            return self.prefix
        f = self.field
        return self.prefix[:f.start] + value + self.prefix[f.end:]

    def headers(self, model: str) -> list[tuple[bytes, bytes]]:
        """Content-Type and the framing of the upstream body (its length when known)."""
        out = [(b"content-type", self.req.header(b"content-type") or b"")]
        if self.declared is None:
            return out + [(b"transfer-encoding", b"chunked")]
        delta = len(model.encode()) - len(self.field.value)
        return out + [(b"content-length", b"%d" % (self.declared + delta))]

    async def relay(self, conn, done: asyncio.Future) -> None:
        """Pump the rest of the body to ``conn`` while its answer (``done``) is awaited."""
        if self.req.body_stream is None:
            conn.end_body()
            await done
            return
        pump = asyncio.ensure_future(self._pump(conn))
        try:
            await asyncio.wait({pump, done}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done() and not done.done() and pump.exception() is not None:
                raise pump.exception()  # type: ignore[misc]
            await done
        finally:
            if not pump.done():
                pump.cancel()
            elif not pump.cancelled():
                pump.exception()  # retrieved: a body cut after the answer is moot, no error

    async def _pump(self, conn) -> None:
        stream = self.req.body_stream
        while True:
            data = await _read(stream)
            if not data:
                conn.end_body()
                return
            self.sent += len(data)
            if self.sent > self.limit:
                raise _too_large(self.limit)  # the engine cuts the provider exchange
            conn.send_more(data)
            await conn.writable()


async def _read(stream) -> bytes:
    try:
        return await stream.read()
    except KrakenError:
        raise
    except (OSError, TimeoutError) as exc:
        raise InvalidValue(f"the request body was cut ({type(exc).__name__})") from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body too large: at most {limit} bytes here")
