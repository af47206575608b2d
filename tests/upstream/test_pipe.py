"""``UpstreamConnection.pipe``, over a real socket: once the handler pipes, each read that is a
plain chunk (``plain_sse_chunk``) goes to the pipe as it came and never to the handler; the
first read that is not goes to the handler and ends the pipe; ``unpipe`` counts what it took.
The provider writes one read at a time and waits for it to land, so reads never merge; the
first test runs over plain TCP and over TLS (the C pipe is then the TLS transport's protocol)."""
from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from kraken import speedups
from kraken.errors import UpstreamTimeout
from kraken.upstream.connection import UpstreamConnection
from test_connection import Wire

pytestmark = pytest.mark.anyio

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3}}\n\n'


def chunk(data: bytes, line: bytes | None = None) -> bytes:
    return (b"%x" % len(data) if line is None else line) + b"\r\n" + data + b"\r\n"


class Handler:
    """Records where each read went; pipes to ``self.piped`` after each chunk it is handed."""

    def __init__(self, pipe_target=None):
        self.chunks: list[bytes] = []
        self.piped: list[bytes] = []
        self.landed = asyncio.Event()
        self.done = asyncio.get_running_loop().create_future()
        self.upstream: UpstreamConnection | None = None
        self._target = pipe_target or self.piped.append

    def bind_pipe(self, upstream: UpstreamConnection) -> None:
        self.upstream = upstream

    def on_head(self, status, headers):
        self.landed.set()

    def on_data(self, data: bytes) -> None:
        self.chunks.append(data)

    def on_chunk(self, data: bytes, frame: bytes) -> None:
        self.chunks.append(frame)
        self.upstream.pipe(self._pipe)

    def _pipe(self, data: bytes) -> None:
        self._target(data)
        self.landed.set()

    def on_read_end(self) -> None:
        self.landed.set()

    def on_end(self) -> None:
        self.done.set_result(None)

    def on_error(self, exc: Exception) -> None:
        self.done.set_exception(exc)


async def exchange(reads: list[bytes], handler_factory, before_write=None, tls: bool = False,
                   read_timeout: float = 5.0) -> tuple[Handler, UpstreamConnection]:
    """Send one request; the provider answers with ``reads``, each after the last has landed
    (``before_write(writer, read)``, if given, writes each read itself), over TLS if asked."""
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_conn(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        accepted.set_result(writer)
        await reader.read()

    server_ctx = client_ctx = None
    if tls:
        ca = trustme.CA()
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(server_ctx)
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
    server = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=server_ctx)
    async with server:
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: UpstreamConnection("http://x", read_timeout), "127.0.0.1",
            server.sockets[0].getsockname()[1], ssl=client_ctx,
            server_hostname="localhost" if tls else None)
        handler = handler_factory()
        conn.send("GET", "/", [(b"host", b"x")], b"", handler)
        writer = await asyncio.wait_for(accepted, 5)
        for read in reads:
            handler.landed.clear()
            if before_write is None:
                writer.write(read)
            else:
                await before_write(writer, read)
            await asyncio.wait_for(handler.landed.wait(), 5)
        await asyncio.wait_for(handler.done, 5)
        writer.close()
        return handler, conn


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_plain_reads_take_the_pipe_and_any_other_read_ends_it(pipe_version, tls):
    first, plain, usage = chunk(EVENT), chunk(EVENT * 2), chunk(USAGE)
    upper = chunk(b"data: " + b"x" * (0xAB - 8) + b"\n\n", line=b"AB")  # not as Kraken writes it
    half = chunk(EVENT[:-1])  # an event not ended in its read
    reads = [HEAD, first, plain, plain, usage, plain, upper, plain, plain, half, plain,
             b"0\r\n\r\n"]
    handler, conn = await exchange(reads, Handler, tls=tls)
    assert isinstance(conn.transport.get_protocol(),
                      UpstreamConnection if pipe_version == "python"
                      else speedups.native("PipeProtocol"))
    assert handler.piped == [plain] * 5  # the plain reads after a chunk the handler saw
    # every other read, in order: the re-framed one as its data (on_data never pipes)
    assert handler.chunks == [first, usage, upper[4:-2], plain, half]
    assert conn.unpipe() == 5 and conn.unpipe() == 0
    assert conn.reusable  # the parser was at a boundary throughout: the response ended cleanly
    conn.close()


async def test_a_pipe_whose_client_closed_hands_the_read_to_the_handler(pipe_version):
    def closed(data: bytes) -> None:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    first = chunk(EVENT)
    handler, conn = await exchange([HEAD, first, first, b"0\r\n\r\n"],
                                   lambda: Handler(pipe_target=closed))
    assert handler.chunks == [first, first] and handler.piped == []
    assert conn.unpipe() == 0
    conn.close()


async def paced(writer, read: bytes, gap_s: float = 0.05) -> None:
    """A slow stream: each content read ``gap_s`` after the last (the loop's clock moves)."""
    if read.startswith(b"%x\r\n" % len(EVENT * 2)):
        await asyncio.sleep(gap_s)
    writer.write(read)


async def test_a_stream_that_only_pipes_is_no_silent_provider(pipe_version):
    """Ten piped reads 50 ms apart outlast a 0.3 s read timeout: the deadline counts from the
    last read the pipe took (in C the pipe notes it; the deadline asks when it fires)."""
    first, plain = chunk(EVENT), chunk(EVENT * 2)
    start = asyncio.get_running_loop().time()
    handler, conn = await exchange([HEAD, first, *[plain] * 10, b"0\r\n\r\n"], Handler,
                                   before_write=paced, read_timeout=0.3)
    assert handler.piped == [plain] * 10 and handler.done.exception() is None
    assert asyncio.get_running_loop().time() - start > 0.3  # the stream outlasted the timeout
    conn.close()


async def test_a_provider_silent_after_piped_reads_times_out_counting_from_the_last(
        pipe_version):
    """A provider that stops after piped reads is timed out, and not before a read timeout has
    passed since its last read (not since the last read the handler saw)."""
    first, plain = chunk(EVENT), chunk(EVENT * 2)
    loop = asyncio.get_running_loop()
    landed: list[float] = []
    failed: list[float] = []

    class Timed(Handler):
        def _pipe(self, data: bytes) -> None:
            landed.append(loop.time())
            super()._pipe(data)

        def on_error(self, exc: Exception) -> None:
            failed.append(loop.time())
            super().on_error(exc)

    with pytest.raises(UpstreamTimeout):
        await exchange([HEAD, first, plain, plain, plain], Timed, before_write=paced,
                       read_timeout=0.2)
    assert len(landed) == 3 and len(failed) == 1
    assert failed[0] >= landed[-1] + 0.2 - 0.002  # uvloop may fire a timer up to 1 ms early


async def test_a_new_exchange_starts_without_the_last_ones_pipe():
    class Unpiped(Handler):
        def on_chunk(self, data: bytes, frame: bytes) -> None:
            self.chunks.append(frame)  # never pipes

    first = chunk(EVENT)
    conn = UpstreamConnection("http://x", 5.0)
    conn.transport = Wire()  # type: ignore[assignment]
    piping, unpiped = Handler(), Unpiped()
    for handler in (piping, unpiped):
        conn.send("GET", "/", [(b"host", b"x")], b"", handler)
        for read in (HEAD, first, first, b"0\r\n\r\n"):
            conn.data_received(read)
        assert handler.done.done()
    assert piping.chunks == [first] and piping.piped == [first]
    assert unpiped.chunks == [first, first] and unpiped.piped == []
    assert conn.unpipe() == 0  # the first exchange's count went with its own send


@pytest.mark.skipif(not speedups.built(), reason="kraken._speedups not built")
async def test_the_c_pipe_notes_the_time_of_every_read_it_takes():
    """In itself (``last_read``): each read touches the pipe anyway, and the deadline is left
    alone (``UpstreamConnection._piped_lately`` reads the time when the deadline fires)."""
    written, times = [], iter([1.5, 2.5])
    owner = UpstreamConnection("http://x", 5.0)  # takes the reads the pipe does not (none here)
    pipe = speedups.native("PipeProtocol")(owner, lambda: next(times))
    assert pipe.last_read == 0.0
    pipe.write = written.append
    first = chunk(EVENT)
    pipe.data_received(first)
    assert pipe.last_read == 1.5 and written == [first]
    pipe.data_received(first)
    assert pipe.last_read == 2.5 and written == [first, first] and pipe.take() == 2
    assert owner._deadline.last == 0.0  # never stamped by the pipe
