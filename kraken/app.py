"""Process lifecycle: wire the parts, serve, and drain on SIGTERM/SIGINT (a second one cuts
the drain short; kraken/shutdown.py says what each signal means when).

Startup order matters: the crash journal of a previous run is replayed into the store
before the listener opens, so a ``kill -9`` never loses a record that a client saw
completed. Shutdown is the reverse: stop accepting, let in-flight responses finish until
the drain deadline, record the rest as ``aborted_shutdown``, flush the queue, checkpoint.
With ``[server] workers = N`` this is what each worker process runs (kraken/workers.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import logging
import os
import signal
import sqlite3
from functools import partial
from typing import Callable

import anyio
import anyio.abc

from kraken import buildinfo, metrics, sdnotify, speedups, workers
from kraken.shutdown import CUT_SHORT, CUT_SIGNAL, Shutdown
from kraken.fdtable import reserve_descriptors
from kraken.transportindex import lean_transport_index
from kraken.accounts import masterkey
from kraken.accounts.byok_cache import ByokCache
from kraken.billing.guard import BillingGuard
from kraken.billing.wallet import usd_to_micros
from kraken.billing.pricing import PriceTable
from kraken.billing.settings import BillingSettings, billing_settings
from kraken.config import Config, ConfigError, ProviderConfig
from kraken.accounts.keystore import DbKeySource
from kraken.accounts.revocation import RevocationWatcher
from kraken.policy.auth import KeyVerifier
from kraken.policy.clientip import ClientAddress
from kraken.policy.limits import build_limiter
from kraken.gateway.endpoints import account as account_api
from kraken.gateway.endpoints import account_email
from kraken.gateway.endpoints import portal
from kraken.gateway.pipeline import Gateway
from kraken.policy.router import Provider, Router
from kraken.http.acme import plain_http_handler
from kraken.http.h1 import H1Connection
from kraken.http.connlimit import ConnectionLimiter
from kraken.http.listener import (ProtocolSelector, cleartext_factory, listen_socket,
                                  serve_socket)
from kraken.http.starts import pacer_for
from kraken.http.tls import CertificateReloader, hsts_header
from kraken.gateway.request_log import RequestLog
from kraken.gateway.upload import UploadLimits
from kraken.privacy import account_rights, account_series
from kraken.meter.journal import Journal
from kraken.meter.writer import Meter
from kraken.providers.family import FamilyBase
from kraken.providers.openai_compat import OpenAICompat
from kraken.store.errors import StoreError
from kraken.config.store import describe as describe_store
from kraken.store.interface import Store
from kraken.store.open import open_store
from kraken.upstream.pool import Origin, OriginPool

log = logging.getLogger("kraken")

EXIT_RECORDS_IN_JOURNAL = workers.EXIT_RECORDS_IN_JOURNAL  # 75
"""Exit status (EX_TEMPFAIL) when the store could not take every record by the drain
deadline: they stay in the crash journal and are replayed at the next start."""
FLUSH_MIN_S = 2.0
"""The final flush gets at least this long even when in-flight responses used the whole
drain deadline (systemd's TimeoutStopSec and the workers' supervisor allow for it)."""
ACCOUNTS_POOL_SIZE = 2
"""PostgreSQL connections for key lookups, revocation and BYOK polls (SQLite: one connection)."""


async def _start_mocks(cfg: Config, stack: contextlib.AsyncExitStack) -> Config:
    """``kind = "mock"`` / ``"mock_anthropic"`` providers run in-process on a loopback port
    (demo, no internet); a ``mock_anthropic`` with a ``base_url`` is an external mock. The
    mocks' modules are imported only then: a dozen modules of idle memory otherwise."""
    providers: list[ProviderConfig] = []
    for p in cfg.providers:
        if p.kind == "mock":
            from kraken.mock.openai_mock import MockOpenAI

            mock = MockOpenAI(chunks=p.mock_chunks, chunk_delay_ms=p.mock_chunk_delay_ms)
            port = await mock.start()
            stack.push_async_callback(mock.close)
            p = dataclasses.replace(p, base_url=f"http://127.0.0.1:{port}/v1")
        elif p.kind == "mock_anthropic" and not p.base_url:  # with a base_url: an external mock
            from kraken.mock.anthropic_mock import MockAnthropic

            claude = MockAnthropic(chunks=p.mock_chunks, chunk_delay_ms=p.mock_chunk_delay_ms)
            port = await claude.start()
            stack.push_async_callback(claude.close)
            p = dataclasses.replace(p, base_url=f"http://127.0.0.1:{port}/v1")
        providers.append(p)
    return dataclasses.replace(cfg, providers=tuple(providers))


def family_of(kind: str) -> type[FamilyBase]:
    """The wire family of a provider kind (OpenAI-compatible unless named here). Imported only
    when a provider of that kind is configured: each costs start-up time and memory."""
    if kind in ("anthropic", "mock_anthropic"):
        from kraken.providers.anthropic import AnthropicFamily

        return AnthropicFamily
    if kind == "azure_openai":
        from kraken.providers.azure_openai import AzureOpenAI

        return AzureOpenAI
    if kind == "vertex":
        from kraken.providers.vertex import VertexFamily

        return VertexFamily
    if kind == "bedrock":
        from kraken.providers.bedrock import BedrockFamily

        return BedrockFamily
    return OpenAICompat


def _build_router(cfg: Config, stack: contextlib.AsyncExitStack, prices: PriceTable) -> Router:
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
            pool_wait_s=p.pool_wait_s,
            per_key_share=p.per_key_share,
        )
        stack.push_async_callback(pool.close)
        family_class = family_of(p.kind)
        providers[p.name] = Provider(p.name, family_class(p, origin.base_path, origin.authority), pool)
    exposed = {p.name: p.models for p in cfg.providers}
    return Router(providers, cfg.models, exposed, aliases=cfg.aliases, routing=cfg.routing,
                  prices=prices)


async def _open_store(cfg: Config, *, pool_size: int | None = None) -> Store:
    """The configured store; one that cannot be opened is a one-line config error naming
    store.path (SQLite) or where PostgreSQL is (never its password)."""
    if cfg.store.backend == "postgres":
        try:
            return await open_store(cfg.store, pool_size=pool_size)
        except StoreError as exc:
            raise ConfigError(f"{cfg.source}: store.dsn: cannot open "
                              f"{describe_store(cfg.store)}: {exc}") from None
    path = cfg.store.path
    if os.path.isdir(path):
        raise ConfigError(f"{cfg.source}: store.path: {path!r} is a directory, not a file")
    try:
        # Tried synchronously first: after a failed connect, aiosqlite's worker thread may
        # report to an event loop that is already closed (a traceback at exit).
        sqlite3.connect(path).close()
        return await open_store(cfg.store)
    except (sqlite3.Error, StoreError, OSError) as exc:
        raise ConfigError(f"{cfg.source}: store.path: cannot open {path!r}: {exc}") from None


@dataclasses.dataclass(slots=True)
class Parts:
    """What startup wired, handed to listening, serving and draining."""

    store: Store
    meter: Meter
    billing: BillingGuard
    gateway: Gateway
    verifier: KeyVerifier
    limiter: object
    revocations: RevocationWatcher
    keyring: object
    connections: set = dataclasses.field(default_factory=set)


async def serve(
    cfg: Config, *, started: asyncio.Future | None = None, stop: asyncio.Event | None = None,
    worker: int | None = None,
) -> int:
    """Run Kraken until SIGTERM/SIGINT (or ``stop``, when embedded); returns the exit code.

    ``worker`` is this process's slot under the supervisor: its own journal directory
    and SO_REUSEPORT listeners shared with its siblings. The steps: start (replay the
    journal, wire the parts), listen, serve until told to stop, drain.
    """
    # First, while this process has one thread (kraken/fdtable.py); under ``kraken serve`` the
    # CLI did it before the log writer's thread, and the table, grown, is not grown again.
    reserve_descriptors()
    metrics.QUEUE_CAPACITY.set(cfg.meter.queue_max)
    build = buildinfo.labels()
    metrics.BUILD_INFO.labels(*(build[name] for name in metrics.BUILD_INFO.labelnames)).set(1)
    keyring = masterkey.load(cfg.byok.master_key_file, cfg.byok.master_key)  # fail before serving
    settings = billing_settings(cfg)  # [prices], [plans], [fees]: parsed once, here
    async with contextlib.AsyncExitStack() as stack:
        cfg, parts = await _start(cfg, stack, settings, keyring, worker)
        servers, reloader = await _listen(cfg, parts, stack, worker)
        left = await _run(cfg, parts, servers, reloader, worker, started, stop)
    if left:
        log.error("kraken stopped with %d record(s) left in the crash journal (exit %d)",
                  left, EXIT_RECORDS_IN_JOURNAL)
        return EXIT_RECORDS_IN_JOURNAL
    log.info("kraken stopped")
    return 0


async def _start(cfg: Config, stack: contextlib.AsyncExitStack, settings: BillingSettings,
                 keyring: object, worker: int | None) -> tuple[Config, Parts]:
    """Replay what a previous run left in the journal, then wire the gateway's parts."""
    store = await _open_store(cfg)
    stack.push_async_callback(store.close)
    billing = BillingGuard(settings.plans,
                           min_balance_micros=usd_to_micros(cfg.wallet.min_balance_usd))
    meter = await _recovered_meter(cfg, store, billing, worker)
    await billing.refresh(store)  # balances, monthly usage and plans before serving
    cfg = await _start_mocks(cfg, stack)
    router = _build_router(cfg, stack, settings.prices)
    # Accounts read on their own connection (pool), so key lookups never queue behind the writer.
    accounts_store = await _open_store(cfg, pool_size=ACCOUNTS_POOL_SIZE)
    stack.push_async_callback(accounts_store.close)
    verifier = KeyVerifier(cfg.keys, cfg.auth, source=DbKeySource(accounts_store))
    stack.callback(verifier.close)
    revocations = RevocationWatcher(accounts_store, verifier, redis_url=cfg.limits.redis_url)
    await revocations.start()
    limiter = build_limiter(cfg.limits)
    stack.push_async_callback(limiter.aclose)
    gateway = Gateway(verifier, limiter, router, meter,
                      settings.prices, settings.fees,
                      ClientAddress(cfg.limits.trusted_proxies))
    gateway.billing = billing
    gateway.owners = store  # files and batches are private to their creator
    gateway.upload_limits = UploadLimits(cfg.server.max_audio_bytes, cfg.server.max_file_bytes)
    gateway.byok = ByokCache(store, keyring, max_entries=cfg.byok.cache_max,
                             ttl_s=cfg.byok.cache_ttl_s, poll_interval_s=cfg.byok.poll_interval_s)
    if cfg.stripe.webhook_secret:
        from kraken.billing.stripe_webhook import PATH as STRIPE_PATH, StripeWebhook

        webhook = StripeWebhook(store, billing, cfg.stripe.webhook_secret,
                                tolerance_s=cfg.stripe.tolerance_s,
                                metadata_key=cfg.stripe.customer_metadata_key)
        gateway.add_endpoint(STRIPE_PATH, webhook.handle)
    accounts = account_api.register(gateway, store, redis_url=cfg.limits.redis_url,
                                    stripe=cfg.stripe)  # /v1/account
    account_rights.register(accounts, export_page_rows=cfg.admin.export_page_rows,
                            keep_billing_records=cfg.retention.keep_billing_records, meter=meter)
    account_series.register(accounts)  # /v1/account/usage/series
    portal.register(gateway)  # /portal: the customer portal page over the account API
    if cfg.email.sends_links:  # email changes by link (without mail: refused, 503)
        account_email.register(accounts, cfg.email)  # /v1/account/email/confirm
    if cfg.email.signup:  # POST /v1/account/signup (off by default: 404)
        from kraken.gateway.endpoints import account_signup

        stack.push_async_callback(
            account_signup.register(gateway, store, cfg.email, cfg.limits).aclose)
    gateway.request_log = RequestLog(  # one line per request on stdout
        cfg.logging, loop=asyncio.get_running_loop())
    if cfg.otel is not None:  # the SDK is an optional extra: imported only when configured
        from kraken.telemetry.otel import Tracing

        gateway.tracing = tracing = Tracing(cfg.otel, cfg.providers)
        stack.push_async_callback(asyncio.to_thread, tracing.close)  # exports what is queued
    return cfg, Parts(store, meter, billing, gateway, verifier, limiter, revocations, keyring)


async def _recovered_meter(cfg: Config, store: Store, billing: BillingGuard,
                           worker: int | None) -> Meter:
    """This process's meter, after every journal segment left on disk is in the store."""
    journal_dir, stale = workers.journal_dirs(cfg, worker)
    replayed = 0
    for directory in stale:  # left by another ``workers`` setting; nobody writes there
        leftover = Meter(store, Journal(directory), cfg.meter)
        leftover.billing = billing  # replayed usage is debited too (idempotent by request id)
        replayed += await _replay(cfg, leftover, directory)
    meter = Meter(store, Journal(journal_dir), cfg.meter)
    meter.billing = billing
    replayed += await _replay(cfg, meter, journal_dir)
    if replayed:
        log.info("replayed %d records from the crash journal", replayed)
    return meter


async def _replay(cfg: Config, meter: Meter, directory: object) -> int:
    """``meter.recover()``; a store that cannot take the records (disk full, locked) is a
    one-line startup error, not a traceback: the segments stay for the next start."""
    try:
        return await meter.recover()
    except StoreError as exc:
        key = "store.dsn" if cfg.store.backend == "postgres" else "store.path"
        raise ConfigError(f"{cfg.source}: {key}: cannot replay the crash journal {directory} "
                          f"into the store ({exc}); it is kept for the next start") from None


async def _listen(cfg: Config, parts: Parts, stack: contextlib.AsyncExitStack,
                  worker: int | None) -> tuple[list[asyncio.AbstractServer],
                                               CertificateReloader | None]:
    """The client listener (TLS when configured), the admin listener and the ACME/redirect one."""
    connections, gateway = parts.connections, parts.gateway
    per_ip = ConnectionLimiter(cfg.server.max_connections_per_ip,  # proxies: never counted
                               exempt=cfg.limits.trusted_proxies)
    reloader = CertificateReloader(cfg.tls.cert, cfg.tls.key) if cfg.tls.cert else None
    if reloader is not None:  # ALPN offers h2: loaded now, not on the first handshake
        from kraken.http import h2  # noqa: F401
    tls = ({"ssl": reloader.context, "ssl_handshake_timeout": cfg.server.head_timeout_s}
           if reloader is not None else {})
    always = [hsts_header(cfg.tls.hsts_max_age)] if reloader is not None and cfg.tls.hsts else []
    loop = asyncio.get_running_loop()  # handed to every connection: one getpid, not one each
    lean_transport_index(loop)  # uvloop's index of transports: see kraken/transportindex.py
    handle = gateway.handle  # bound once, not once per connection
    answers = gateway.paths.error_answer  # the transport's refusals, in the path's format
    if reloader is None:  # cleartext: each connection is an H1Connection from the accept on
        factory: Callable[[], asyncio.BaseProtocol] = cleartext_factory(
            handle, cfg.server, connections, h2c=cfg.server.h2c, limiter=per_ip, loop=loop,
            answers=answers)
    else:
        factory = partial(ProtocolSelector, handle, cfg.server, connections, h2c=cfg.server.h2c,
                          always_headers=always, limiter=per_ip, loop=loop, answers=answers)
    server = await serve_socket(
        factory,
        listen_socket(cfg.server.host, cfg.server.port, reuse_port=worker is not None,
                      setting="server.port"),
        **tls,
    )
    servers = [server]
    if cfg.admin.token_hash and worker in (None, 0):  # one admin listener per host
        from kraken.admin.listener import start_admin

        servers.append(await start_admin(cfg, parts.store, connections, meter=parts.meter,
                                           verifier=parts.verifier, limiter=parts.limiter,
                                           keyring=parts.keyring, billing=parts.billing,
                                           stack=stack))
    if cfg.server.redirect_http_port:  # ACME challenges + redirect; also before any cert exists
        plain = plain_http_handler(cfg.server.acme_dir, cfg.server.port)
        servers.append(await serve_socket(
            lambda: H1Connection(plain, cfg.server, connections),
            listen_socket(cfg.server.host, cfg.server.redirect_http_port,
                          reuse_port=worker is not None, setting="server.redirect_http_port")))
    return servers, reloader


async def _run(cfg: Config, parts: Parts, servers: list[asyncio.AbstractServer],
               reloader: CertificateReloader | None, worker: int | None,
               started: asyncio.Future | None, stop: asyncio.Event | None) -> int:
    """Serve until ``stop`` (or SIGTERM/SIGINT), then drain; returns the records left in the
    journal (0: the store took them all)."""
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    stop = stop or asyncio.Event()
    # A supervised worker's drain is cut by its supervisor's CUT_SIGNAL only (see shutdown.py).
    shutdown = Shutdown(repeat_cuts=worker is None)

    def on_stop(sig: signal.Signals) -> None:
        if shutdown.stop(sig.name):
            stop.set()

    def on_cut() -> None:
        if shutdown.cut(f"{CUT_SIGNAL.name} from the supervisor"):
            stop.set()

    def on_sighup() -> None:
        """Reload the certificate for new handshakes; a broken one keeps the old. Not once
        stopping: READY=1 after STOPPING=1 would tell systemd the service is up again."""
        if not shutdown.reload():
            return
        sdnotify.reloading()
        if reloader is not None:
            reloader.reload()
        sdnotify.ready()

    signals = {signal.SIGTERM: partial(on_stop, signal.SIGTERM),
               signal.SIGINT: partial(on_stop, signal.SIGINT), signal.SIGHUP: on_sighup}
    if worker is not None:
        signals[CUT_SIGNAL] = on_cut
    if own_signals:
        for sig, callback in signals.items():
            loop.add_signal_handler(sig, callback)
    try:
        async with anyio.create_task_group() as tg:
            await _start_background(tg, cfg, parts, worker)
            address = servers[0].sockets[0].getsockname()
            scheme = "https" if reloader is not None else "http"
            log.info("kraken listening on %s://%s:%d", scheme, address[0], address[1])
            if started is not None and not started.done():
                started.set_result(address[1])
            sdnotify.ready(f"listening on {address[0]}:{address[1]}")
            _release_startup_memory()
            await stop.wait()
            left = await _shut_down(cfg, parts, servers, shutdown)
            tg.cancel_scope.cancel()  # the billing refresh loop; the meter is flushed
    finally:
        if own_signals:
            for sig in signals:
                loop.remove_signal_handler(sig)
            if shutdown.stopping:  # closing the stores: a reload now would kill the process
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return left


GC_YOUNG_THRESHOLD = 100_000
"""Container allocations, net of those freed, between two collections of the youngest
generation (Python's default: 700; 20,000 until a burst was measured). Nearly everything a
request allocates dies by reference count: over a bench run (warm-up, c=32, three bursts of
1000 streams) the collector found 525 unreachable objects in all. So a young collection runs
only when live objects grow, as when 1000 streams open at once (~60 each), and then it only
walks live objects. At 20,000 a burst ran three, 5-9 ms in all (5-8% of its window to the last
first byte); at 100,000 none, and a collection, when one runs, takes up to ~10 ms."""


def _release_startup_memory() -> None:
    """Hand back to the OS the heap pages start-up freed (compiling and importing modules,
    parsing the config, migrations): glibc keeps them mapped until asked (~0.3 ms).

    What start-up built and still holds (modules, config, caches) is moved out of the
    collector's sight (``gc.freeze``), so no later full collection walks it again.

    From here on, the arenas Python's small objects get are mapped with their pages present
    (``kraken/csrc/arena.c``): a burst's new objects then take no page fault each."""
    gc.collect()
    gc.freeze()
    populate_arenas = speedups.native("populate_arenas")
    if populate_arenas is not None and not speedups.PURE_PYTHON:
        populate_arenas()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to ask
        pass


async def _start_background(tg: anyio.abc.TaskGroup, cfg: Config, parts: Parts,
                            worker: int | None) -> None:
    """The writer, retention, billing refresh, revocations and BYOK polls."""
    tg.start_soon(parts.meter.run)
    if worker in (None, 0):
        from kraken.privacy import retention

        tg.start_soon(retention.run, parts.store, cfg.retention)
    tg.start_soon(parts.billing.run, parts.store, cfg.wallet.refresh_interval_s)
    tg.start_soon(parts.revocations.run)  # revoked keys refused within 1 s
    await tg.start(parts.gateway.byok.run)  # first change poll done before serving


async def _shut_down(cfg: Config, parts: Parts, servers: list[asyncio.AbstractServer],
                     shutdown: Shutdown) -> int:
    """Drain in-flight responses, then flush the meter within what is left of the deadline
    (all of it even when the drain was cut short: the records must reach the store)."""
    deadline = anyio.current_time() + cfg.server.drain_timeout_s
    sdnotify.stopping("draining")
    log.info("shutting down: draining for up to %.0fs", cfg.server.drain_timeout_s)
    await _drain(servers, parts.gateway, parts.connections, cfg.server.drain_timeout_s, shutdown)
    # A store that stays down (disk full) cannot hold shutdown past the deadline:
    # what it did not take stays in the journal, replayed at the next start.
    left = await parts.meter.close(max(deadline - anyio.current_time(), FLUSH_MIN_S))
    if parts.gateway.request_log is not None:
        parts.gateway.request_log.drain()  # the last turn's request lines
    return left


def _in_flight(connections: set) -> list[asyncio.Task]:
    """Handler tasks still running on HTTP/1.1 and HTTP/2 connections."""
    return [task for conn in list(connections) for task in conn.tasks]


async def _drain(servers: list[asyncio.AbstractServer], gateway: Gateway,
                 connections: set, deadline_s: float, shutdown: Shutdown) -> None:
    """Stop accepting, finish in-flight responses until the deadline or until the drain is cut
    short (a second stop signal), then abort what is left."""
    # Requests read before the drain are served: the handlers still waiting for their turn
    # begin now, and their first step passes the gateway's admission before it refuses.
    pacer_for(asyncio.get_running_loop()).flush()
    await asyncio.sleep(0)
    gateway.shutting_down = True
    for server in servers:
        server.close()
    for conn in list(connections):
        conn.close_when_idle()
    with anyio.move_on_after(deadline_s) as waiting:
        shutdown.on_cut = waiting.cancel  # called from a signal handler, on this loop
        if shutdown.state is CUT_SHORT:  # cut before the drain began
            waiting.cancel()
        while tasks := _in_flight(connections):
            await asyncio.wait(tasks)
    shutdown.on_cut = None
    gateway.aborting = True
    leftovers = _in_flight(connections)
    for conn in list(connections):
        if conn.tasks:
            conn.abort()  # past the deadline: cut it, recorded as aborted_shutdown
        else:
            conn.close_when_idle()  # finished: let buffered bytes reach the client
    if leftovers:
        await asyncio.wait(leftovers, timeout=5)
