"""A real OTLP/HTTP trace receiver for tests: an asyncio server speaking HTTP/1.1 through h11,
decoding each ``POST /v1/traces`` body as ``ExportTraceServiceRequest`` with the generated
classes of opentelemetry-proto (the collector's own wire format)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import h11
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["OtlpReceiver", "ReceivedSpan"]


def _value(v: AnyValue):
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict
    resource: dict


class OtlpReceiver:
    """Collects spans; ``hold`` makes it accept exports and never answer (a stuck collector)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []
        self.hold = False
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                target, headers, body = event.target, dict(event.headers), bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                await self._answer(conn, writer, target, headers, bytes(body))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return

    async def _answer(self, conn, writer, target: bytes, headers: dict, body: bytes) -> None:
        if target != b"/v1/traces":
            status, payload = 404, b""
        else:
            self.headers.append(headers)
            self.bodies.append(body)
            self.spans.extend(decode(body))
            if self.hold:
                await asyncio.Event().wait()  # until close() cancels
            status, payload = 200, ExportTraceServiceResponse().SerializeToString()
        writer.write(conn.send(h11.Response(status_code=status, headers=[
            ("content-type", "application/x-protobuf"), ("content-length", str(len(payload)))])))
        writer.write(conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        await writer.drain()


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out = []
    for rs in request.resource_spans:
        resource = {a.key: _value(a.value) for a in rs.resource.attributes}
        for scope in rs.scope_spans:
            for s in scope.spans:
                out.append(ReceivedSpan(
                    name=s.name, kind=s.kind, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(), trace_state=s.trace_state,
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    status_code=s.status.code,
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    resource=resource))
    return out
