"""Bounded HTTP/1.1 load generator: raw sockets on uvloop, keep-alive, TTFB per request.

It runs as its own process so its CPU never counts against the target. Each of ``concurrency``
connections sends requests back to back until ``--requests`` are done or ``--max-seconds`` pass.
TTFB is the time from writing the request to receiving the first byte of the response body
(after the header block), so a proxy that flushes headers early gains nothing.

``--timeline`` adds when the first request was written and the last first byte arrived
(``time.perf_counter``: CLOCK_MONOTONIC, comparable across processes on Linux) and the first
bytes' times by decile of send order: whether a burst's streams are served first come, first
served, and what the target's CPU was doing meanwhile (``bench/run.py`` reads it).

    .venv/bin/python bench/loadgen.py --url http://127.0.0.1:9000/v1/chat/completions --stream \\
        --concurrency 32 --requests 2000 --max-seconds 30
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

DEFAULT_BODY = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
perf = time.perf_counter


class ResponseError(Exception):
    pass


class Client(asyncio.Protocol):
    """One keep-alive connection with a minimal response parser (Content-Length or chunked)."""

    def __init__(self):
        self.transport = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.lost = False
        self._reset()

    def _reset(self):
        self.in_head = True
        self.status = 0
        self.chunked = False
        self.length = 0
        self.pos = 0  # chunked: parse position in buf
        self.ttfb = 0.0
        self.close_after = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("connection lost mid-response"))

    def request(self, data: bytes) -> asyncio.Future:
        self.fut = asyncio.get_running_loop().create_future()
        self._reset()
        self.transport.write(data)
        return self.fut

    def data_received(self, data):
        now = perf()
        self.buf += data
        if self.fut is None or self.fut.done():
            return
        try:
            self._parse(now)
        except ValueError as e:
            self.fut.set_exception(ResponseError(f"malformed response: {e}"))
            self.transport.abort()

    def _parse(self, now: float):
        buf = self.buf
        if self.in_head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.fut.set_exception(ResponseError("bad status line"))
                return
            self.in_head = False
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            self.close_after = b"\r\nconnection: close" in head
            if not self.chunked:
                i = head.find(b"\r\ncontent-length:")
                if i < 0:
                    self.fut.set_exception(ResponseError("no content-length"))
                    return
                j = head.find(b"\r\n", i + 2)
                self.length = int(head[i + 17 : j if j > 0 else len(head)])
            if not buf and (self.chunked or self.length):
                return  # headers alone do not count as the first byte
        if not self.ttfb:
            self.ttfb = now
        if self.chunked:
            pos = self.pos
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                if size == 0:
                    if buf.find(b"\r\n", eol + 2) != eol + 2:
                        break  # trailers are never sent by our targets; wait for the empty line
                    self._finish(now, pos, eol + 4)
                    return
                if len(buf) < eol + size + 4:
                    break
                pos = eol + size + 4
            self.pos = pos
        elif len(buf) >= self.length:
            self._finish(now, self.length, self.length)

    def _finish(self, now: float, body_end: int, consumed: int):
        # The body stays in buf until here so the caller can check that a stream ends in [DONE].
        tail = bytes(self.buf[max(0, body_end - 40) : body_end]) if self.chunked else b""
        del self.buf[:consumed]
        self.fut.set_result((self.status, self.ttfb or now, now, consumed, tail))
        if self.close_after:
            self.transport.close()


class Run:
    """Shared budget and results of one load run."""

    def __init__(self, requests: int, deadline: float):
        self.remaining = requests
        self.deadline = deadline
        self.stopped = False
        self.ttfb: list[float] = []
        self.total: list[float] = []
        self.status: dict[int, int] = {}
        self.errors = 0  # requests that failed (non-200, broken or malformed response)
        self.connect_errors = 0
        self.cut = 0
        self.bad_stream = 0
        self.bytes = 0
        self.clients: set[Client] = set()
        self.timeline: list[tuple[float, float]] | None = None
        """(sent, first byte) of each measured request, when asked (``--timeline``)."""

    def stop(self):
        self.stopped = True
        for c in list(self.clients):
            if c.transport is not None:
                c.transport.abort()


async def worker(run: Run, host: str, port: int, payload: bytes, stream: bool, record: bool):
    loop = asyncio.get_running_loop()
    client: Client | None = None
    while run.remaining > 0 and not run.stopped:
        if client is None or client.lost or client.transport.is_closing():
            try:
                _, client = await loop.create_connection(Client, host, port)
            except OSError:
                run.connect_errors += 1
                await asyncio.sleep(0.05)
                continue
            run.clients.add(client)
            continue  # the budget may have been spent while connecting
        run.remaining -= 1
        t0 = perf()
        try:
            status, ttfb, end, nbytes, tail = await client.request(payload)
        except (ConnectionError, ResponseError, ValueError):
            if run.stopped:
                run.cut += 1
            else:
                run.errors += 1
            client.transport.abort()
            client = None
            continue
        if not record:
            continue
        run.status[status] = run.status.get(status, 0) + 1
        run.bytes += nbytes
        if status != 200:
            run.errors += 1
            continue
        if stream and b"data: [DONE]" not in tail:
            run.bad_stream += 1
        run.ttfb.append((ttfb - t0) * 1000)
        if run.timeline is not None:
            run.timeline.append((t0, ttfb))
        run.total.append((end - t0) * 1000)
    if client is not None and client.transport is not None:
        client.transport.close()


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    v = sorted(values)

    def rank(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))], 4)

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": round(v[-1], 4),
            "mean": round(sum(v) / len(v), 4)}


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    if u.scheme != "http":
        raise SystemExit("only http:// URLs are supported")
    host, port = u.hostname, u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {u.netloc}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def timeline_summary(timeline: list[tuple[float, float]]) -> dict:
    """The first send, the last first byte, and the mean first byte of each tenth of the
    requests in send order, in ms after the first send."""
    if not timeline:
        return {}
    ordered = sorted(timeline)
    first = ordered[0][0]
    n = len(ordered)
    tenths = [ordered[n * k // 10 : n * (k + 1) // 10] for k in range(10)]
    return {"first_sent": first, "last_first_byte": max(fb for _, fb in ordered),
            "first_byte_ms_by_decile": [round(sum(fb for _, fb in part) / len(part) * 1000
                                              - first * 1000, 2) for part in tenths if part]}


async def load(url: str, body: bytes, headers: list[str], stream: bool, concurrency: int,
               requests: int, max_seconds: float, warmup: int = 0,
               timeline: bool = False) -> dict:
    """Run the load and return the summary dict (what ``--json`` prints)."""
    host, port, payload = build_request(url, body, headers)
    loop = asyncio.get_running_loop()
    if warmup:
        wr = Run(warmup, 0)
        timer = loop.call_later(max_seconds, wr.stop)
        await asyncio.gather(*(worker(wr, host, port, payload, stream, False)
                               for _ in range(min(concurrency, warmup))))
        timer.cancel()
    run = Run(requests, 0)
    if timeline:
        run.timeline = []
    t0 = perf()
    timer = loop.call_later(max_seconds, run.stop)
    await asyncio.gather(*(worker(run, host, port, payload, stream, True) for _ in range(concurrency)))
    elapsed = perf() - t0
    timer.cancel()
    run.stopped = True
    done = len(run.total)
    return {
        "url": url, "stream": stream, "concurrency": concurrency, "requested": requests,
        "completed": done, "errors": run.errors, "connect_errors": run.connect_errors,
        "cut_by_deadline": run.cut,
        "bad_stream": run.bad_stream, "timed_out": run.remaining > 0 and elapsed >= max_seconds,
        "seconds": round(elapsed, 4), "rps": round(done / elapsed, 1) if elapsed else None,
        "status": {str(k): v for k, v in sorted(run.status.items())}, "bytes": run.bytes,
        "ttfb_ms": percentiles(run.ttfb), "total_ms": percentiles(run.total),
        **timeline_summary(run.timeline or []),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="http://host:port/path (POST)")
    ap.add_argument("--stream", action="store_true", help='send "stream": true')
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--requests", type=int, default=1000, help="measured requests (upper bound)")
    ap.add_argument("--max-seconds", type=float, default=30.0, help="hard cap on measuring time")
    ap.add_argument("--warmup", type=int, default=0, help="unmeasured requests first")
    ap.add_argument("--body", help="JSON request body, or @FILE holding it (default: a "
                                   "one-message chat request)")
    ap.add_argument("-H", "--header", action="append", default=[], help="extra header 'Name: value'")
    ap.add_argument("--json", metavar="FILE", help="write the summary as JSON ('-' = stdout)")
    ap.add_argument("--timeline", action="store_true",
                    help="add the first send, the last first byte and first bytes by decile")
    args = ap.parse_args(argv)
    text = args.body
    if text and text.startswith("@"):  # a body too long for one argument (128 KiB on Linux)
        with open(text[1:], encoding="utf-8") as f:
            text = f.read()
    body_obj = json.loads(text) if text else dict(DEFAULT_BODY)
    if args.stream:
        body_obj["stream"] = True
    body = json.dumps(body_obj, separators=(",", ":")).encode()
    coro = load(args.url, body, args.header, args.stream, max(1, args.concurrency),
                max(0, args.requests), max(0.1, args.max_seconds), max(0, args.warmup),
                args.timeline)
    try:
        import uvloop
        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    if args.json == "-":
        print(json.dumps(result), flush=True)
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        t, tt = result["ttfb_ms"], result["total_ms"]
        print(f"{result['completed']} ok, {result['errors']} errors, {result['connect_errors']} "
              f"connect errors in {result['seconds']} s "
              f"= {result['rps']} req/s; TTFB p50 {t['p50']} p99 {t['p99']} ms; "
              f"total p50 {tt['p50']} p99 {tt['p99']} ms; status {result['status']}")
    return 0 if result["errors"] == 0 and result["connect_errors"] == 0 and result["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
