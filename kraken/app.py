"""Process lifecycle: wire the parts, serve, and drain on SIGTERM/SIGINT.

Startup order matters: the crash journal of a previous run is replayed into the store
before the listener opens, so a ``kill -9`` never loses a record that a client saw
completed. Shutdown is the reverse: stop accepting, let in-flight responses finish until
the drain deadline, record the rest as ``aborted_shutdown``, flush the queue, checkpoint.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket

import anyio

from kraken import metrics
from kraken.billing.fees import FeeSchedule
from kraken.billing.pricing import PriceTable
from kraken.config import Config, ProviderConfig
from kraken.gateway.auth import KeyVerifier
from kraken.gateway.limits import LocalLimiter
from kraken.gateway.pipeline import Gateway
from kraken.gateway.router import Provider, Router
from kraken.http.h1 import H1Connection
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.providers.openai_compat import OpenAICompat
from kraken.store.sqlite import SqliteStore
from kraken.upstream.pool import Origin, OriginPool

log = logging.getLogger("kraken")


async def _start_mocks(cfg: Config, stack: contextlib.AsyncExitStack) -> Config:
    """``kind = "mock"`` providers run in-process on a loopback port (demo, no internet)."""
    from kraken.mock.openai_mock import MockOpenAI

    providers: list[ProviderConfig] = []
    for p in cfg.providers:
        if p.kind == "mock":
            mock = MockOpenAI(chunks=p.mock_chunks, chunk_delay_ms=p.mock_chunk_delay_ms)
            port = await mock.start()
            stack.push_async_callback(mock.close)
            p = dataclasses.replace(p, base_url=f"http://127.0.0.1:{port}/v1")
        providers.append(p)
    return dataclasses.replace(cfg, providers=tuple(providers))


def _build_router(cfg: Config, stack: contextlib.AsyncExitStack) -> Router:
    providers: dict[str, Provider] = {}
    for p in cfg.providers:
        origin = Origin(p.base_url)
        pool = OriginPool(
            origin,
            p.name,
            max_connections=p.max_connections,
            connect_timeout_s=p.connect_timeout_s,
            read_timeout_s=p.read_timeout_s,
            idle_timeout_s=p.idle_timeout_s,
        )
        stack.push_async_callback(pool.close)
        providers[p.name] = Provider(p.name, OpenAICompat(p, origin.base_path, origin.authority), pool)
    exposed = {p.name: p.models for p in cfg.providers}
    return Router(providers, cfg.models, exposed)


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(
    cfg: Config, *, started: asyncio.Future | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run Kraken until SIGTERM/SIGINT (or ``stop``, when embedded); returns the exit code."""
    loop = asyncio.get_running_loop()
    metrics.QUEUE_CAPACITY.set(cfg.meter.queue_max)
    async with contextlib.AsyncExitStack() as stack:
        store = await SqliteStore.open(cfg.store.path, busy_timeout_ms=cfg.store.busy_timeout_ms)
        stack.push_async_callback(store.close)
        meter = Meter(store, Journal(cfg.journal_dir), cfg.meter)
        replayed = await meter.recover()
        if replayed:
            log.info("replayed %d records from the crash journal", replayed)
        cfg = await _start_mocks(cfg, stack)
        router = _build_router(cfg, stack)
        verifier = KeyVerifier(cfg.keys, cfg.auth)
        stack.callback(verifier.close)
        gateway = Gateway(verifier, LocalLimiter(), router, meter,
                          PriceTable.load(cfg.prices), FeeSchedule.from_mapping(cfg.fees))
        connections: set[H1Connection] = set()
        server = await loop.create_server(
            lambda: H1Connection(gateway.handle, cfg.server, connections),
            sock=_listen_socket(cfg.server.host, cfg.server.port),
        )
        own_signals = stop is None
        stop = stop or asyncio.Event()
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        async with anyio.create_task_group() as tg:
            tg.start_soon(meter.run)
            address = server.sockets[0].getsockname()
            log.info("kraken listening on http://%s:%d", address[0], address[1])
            if started is not None and not started.done():
                started.set_result(address[1])
            await stop.wait()
            log.info("shutting down: draining for up to %.0fs", cfg.server.drain_timeout_s)
            await _drain(server, gateway, connections, cfg.server.drain_timeout_s)
            await meter.close()
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    log.info("kraken stopped")
    return 0


async def _drain(server: asyncio.AbstractServer, gateway: Gateway,
                 connections: set[H1Connection], deadline_s: float) -> None:
    """Stop accepting, finish in-flight responses, then abort what is left."""
    gateway.shutting_down = True
    server.close()
    for conn in list(connections):
        conn.close_when_idle()
    with anyio.move_on_after(deadline_s):
        while tasks := [c.task for c in list(connections) if c.task is not None]:
            await asyncio.wait(tasks)
    gateway.aborting = True
    leftovers = [c.task for c in list(connections) if c.task is not None]
    for conn in list(connections):
        if conn.task is not None:
            conn.abort()  # past the deadline: cut it, recorded as aborted_shutdown
        else:
            conn.close_when_idle()  # finished: let buffered bytes reach the client
    if leftovers:
        await asyncio.wait(leftovers, timeout=5)
