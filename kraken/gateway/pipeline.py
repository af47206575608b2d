"""The lifecycle engine: every metered call runs the same phases, in an order written once.

    identify → admit → check billing caps → take rate limit → parse → check model allowed
             → classify → route → dispatch (→ relay) → record

(Only ``auto`` routes by the task: for another model classify runs late, ``LateTask``.)

``Gateway.run`` states that order for any ``Endpoint`` (``kraken.gateway.endpoint``); an
endpoint only supplies its parse, classify, route filter, request shape, response filter and
error format. Each phase is a method of the gateway taking the call (and the request or what
was read from it) that raises a ``KrakenError`` to stop; ``run`` turns that into the endpoint's
error format and makes sure every admitted request leaves exactly one record. No socket calls
and no SQL here.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from functools import partial
from typing import Awaitable

from kraken import metrics, shedding
from kraken.accounts.byok import ByokKeyUnusable
from kraken.accounts.byok_cache import ByokCache
from kraken.billing.fees import FeeSchedule
from kraken.billing.guard import BillingGuard
from kraken.billing.pricing import PriceTable
from kraken.errors import KrakenError, Overloaded, UpstreamError
from kraken.gateway import fallback
from kraken.gateway.answers import PLAIN_REFUSALS, IdentifiedSink, refusal, send_error, send_json
from kraken.gateway.call import Call
from kraken.gateway.call_price import price_call
from kraken.gateway.cost_header import answer_sink
from kraken.gateway.endpoint import Endpoint, LateTask, Parsed
from kraken.gateway.endpoints import ERROR_FORMATS, METERED
from kraken.gateway.endpoints import models as model_list
from kraken.gateway.paths import Handler, Paths
from kraken.gateway.relay import Relay
from kraken.gateway.request_log import RequestLog
from kraken.gateway.upload import UPLOAD, UploadLimits
from kraken.http.exchange import Request, ResponseSink
from kraken.meter.writer import Meter
from kraken.policy import auth
from kraken.policy.auth import KeyVerifier, Principal, credential
from kraken.policy.authgate import AddressGate
from kraken.policy.clientip import ClientAddress
from kraken.policy.ratelimit import Lease, Limiter
from kraken.policy.router import Route, Router
from kraken.providers.family import Headers, UpstreamRequest
from kraken.providers.openai_files import BatchUsage
from kraken.store.record import RequestRecord

log = logging.getLogger("kraken.gateway")


class _Answered:
    """What ``Gateway.handle`` returns for a request it answered at once: nothing to wait for."""

    __slots__ = ()

    def __await__(self):
        return iter(())


_ANSWERED = _Answered()


class Gateway:
    """Everything one request needs, wired once at startup."""

    def __init__(self, verifier: KeyVerifier, limiter: Limiter, router: Router, meter: Meter,
                 prices: PriceTable, fees: FeeSchedule,
                 client_address: ClientAddress = ClientAddress()):
        self.prices = prices
        self.client_address = client_address
        self._releases: set[asyncio.Task] = set()
        """Lease releases under way (at most one per call in flight)."""
        self.fees = fees
        self.verifier = verifier
        self.limiter = limiter
        self.router = router
        self.meter = meter
        self.request_log: RequestLog | None = None
        """The per-request log line (kraken/logs.py); None: no line (embedded use)."""
        self.shutting_down = False
        self.billing: BillingGuard | None = None
        """Plans, monthly caps and prepaid balances (kraken/billing/guard.py); None: no checks."""
        self.byok: ByokCache | None = None  # customers' own provider keys (byok_cache.py)
        self.owners = None  # a Store: who created each file and batch (endpoints/file_owners.py)
        self.upload_limits = UploadLimits()
        """The largest audio and file uploads (``[server]``)."""
        self.aborting = False
        self.tracing = None
        """``kraken.telemetry.otel.Tracing`` when ``[otel]`` is on (app.py imports it then only)."""
        """Set when the drain deadline passed: cancellations are the gateway's, not the client's."""
        self.model_label = metrics.ModelLabels(router.served_models())
        """A dispatched model's metric label value: the provider's configured names, else
        ``other``."""
        self._attempt, self._journal, self._count = self.relay, self.journal, self.count
        """Bound once: a bound method made per call is one more GC-tracked object held for
        as long as the call lasts (fallback.dispatch's attempt, the relay's on_complete)."""
        self.paths = Paths()
        for endpoint in METERED:
            self.add_call(endpoint)
        for prefix, errors in ERROR_FORMATS:
            self.paths.add_error_format(prefix, errors)
        model_list.register(self)
        self.add_endpoint("/healthz", self.healthz, None)
        self.add_endpoint("/readyz", self.readyz, None)
        self.add_endpoint("/metrics", self.prometheus, None)

    def handle(self, req: Request, sink: ResponseSink) -> Awaitable[None]:
        """Entry point for every request on the client listener: the path's handler, to await.

        Metered calls answer their own errors and a plain endpoint's refusal is answered by
        its wrapper (``add_endpoint``); an unknown path or a wrong method, raised here at the
        call, is answered at once. Each in the wire format of the path's family, with a
        request id like every answer. (Not a coroutine itself: its frame would be held, and
        resumed at every wake-up, as long as a call lasts.)"""
        try:
            return self.paths.handler_for(req.path)(req, sink)
        except KrakenError as exc:
            self.refuse(req, sink, exc)
            return _ANSWERED

    def refuse(self, req: Request, sink: ResponseSink, exc: KrakenError) -> None:
        """A refusal outside a metered call, in the path's format (or the cut response, once
        an answer has started)."""
        if sink.started:
            raise exc
        send_error(sink, self.paths.error_format(req.path), exc, Call(req.received_ns, ""))

    def add_endpoint(self, path: str, handler: Handler, method: str | None = "POST") -> None:
        """Serve ``path`` with a plain ``handler`` (no call, no record); its answer gets a
        fresh ``x-request-id``, a ``KrakenError`` it raises (or a busy database: 503) is
        answered in the path's format. Other methods get 405 when ``method`` is set; a path
        ending in ``/*`` serves everything under it."""

        async def identified(req: Request, sink: ResponseSink) -> None:
            try:
                await handler(req, IdentifiedSink(sink))
            except PLAIN_REFUSALS as exc:
                self.refuse(req, sink, refusal(exc, path))

        self.paths.add(path, identified, method)

    def add_call(self, endpoint: Endpoint) -> None:
        """Serve ``endpoint`` as a metered call (``run``: one record per admitted call)."""

        def metered(req: Request, sink: ResponseSink) -> Awaitable[None]:
            return self.run(endpoint, req, sink)  # no frame of its own while a stream lasts

        self.paths.add(endpoint.path, metered, endpoint.method)

    async def healthz(self, req: Request, sink: ResponseSink) -> None:
        send_json(sink, 200, b'{"status":"ok"}')

    async def readyz(self, req: Request, sink: ResponseSink) -> None:
        ready = self.meter.ready and not self.shutting_down
        send_json(sink, 200 if ready else 503,
                  b'{"status":"ready"}' if ready else b'{"status":"not ready"}')

    async def prometheus(self, req: Request, sink: ResponseSink) -> None:
        content_type, body = metrics.exposition()
        sink.respond(200, [(b"content-type", content_type)], body)

    # ---- the engine ----------------------------------------------------------------
    async def run(self, endpoint: Endpoint, req: Request, sink: ResponseSink) -> None:
        """One metered call: its phases, then exactly one record per admitted call.

        Any ``KrakenError`` a phase raises becomes the error answer in the endpoint's wire
        format before the first byte, or is left to the relay's error event after it.
        """
        call = Call(req.received_ns, endpoint.route)
        if self.tracing is not None:
            call.trace = self.tracing.begin(req.header(b"traceparent"), req.header(b"tracestate"))
        try:
            await self.phases(endpoint, call, req, sink)
        except KrakenError as exc:
            call.fail(exc)
            self.record(call)
            if not sink.started:
                send_error(sink, endpoint.errors, exc, call)
        except asyncio.CancelledError:
            call.status = call.status or 499
            client_gone = sink.disconnected and not self.aborting
            call.error_type = "client_cancelled" if client_gone else "aborted_shutdown"
            if client_gone:
                metrics.CLIENT_CANCELLED.inc()
            self.record(call)
            raise
        except Exception:
            log.exception("request %s failed", call.request_id)
            err = KrakenError("internal error")
            call.fail(err)
            self.record(call)
            if not sink.started:
                send_error(sink, endpoint.errors, err, call)
        finally:
            if call.reserved and not call.recorded:
                self.meter.release()
            if call.lease is not None:
                self.release(call)

    async def phases(self, endpoint: Endpoint, call: Call, req: Request,
                     sink: ResponseSink) -> None:
        """The order every metered endpoint runs, written once (the record is pushed by the
        relay when the answer ends, or by ``run`` when a phase refuses)."""
        creds = req if endpoint.credentials is None else endpoint.credentials(req)
        # the key cache, memory limiter and BYOK cache answer at once; only a miss awaits (a
        # coroutine that never waits costs its object, frame and send: six a request)
        principal = self.cached_principal(creds) or await self.authenticate(creds)
        call.customer_id = principal.customer_id
        call.key_id = principal.key_id
        where = None if endpoint.locate is None else endpoint.locate(req)
        self.admit(call)
        subject = self.check_billing_caps(call, principal)
        self.hold_lease(call, self.limiter.acquire_now(subject)
                        or await self.limiter.acquire(subject))
        parsed = Parsed(req, endpoint.parse(req.body) if endpoint.read is None
                        else await endpoint.read(req, self.upload_limits), where)
        model = endpoint.model(parsed) if endpoint.routes is None else None
        if model is not None:
            self.check_model_allowed(principal, model)
        call.opted_out = principal.opted_out  # feeds no routing statistics
        if endpoint.request_id_header is not None:
            call.response_headers = [*call.response_headers,
                                     (endpoint.request_id_header, call.request_id.encode())]
        # only ``auto`` routes by the task; else the record alone reads it: classified later
        later = self.classify(call, endpoint, parsed,
                              now=model is None or self.router.routes_by_task(model))
        try:
            routes = (self.route(call, endpoint, model) if model is not None
                      else endpoint.routes(self.router, parsed))
            if self.byok is not None:  # once per call, from memory on a hit
                keys = self.byok.keys_now(call.customer_id)
                if keys is None:
                    keys = await self.byok.keys_for(call.customer_id)
                call.byok_keys = keys
            dispatch = self.dispatch if endpoint.around is None else partial(endpoint.around, self)
            await dispatch(call, endpoint, routes, parsed, sink, later)  # files: their owners
        finally:
            if later is not None:
                later()  # refused before the send: the record still names the task

    # ---- phases --------------------------------------------------------------------
    @staticmethod
    def token(req: Request) -> bytes | None:
        token = credential(req.header(b"authorization"), None)
        if token is None:  # a Bearer token wins: only without one is x-api-key looked for
            token = credential(None, req.header(b"x-api-key"))
        return token

    def cached_principal(self, req: Request) -> Principal | None:
        """The request's key as verified within the cache's TTL (no bcrypt, no await), or
        None: ``authenticate``."""
        token = self.token(req)
        return None if token is None else self.verifier.lookup_cached(token)

    async def authenticate(self, req: Request) -> Principal:
        principal = self.cached_principal(req)
        if principal is not None:
            return principal
        # A cache miss may cost a bcrypt run: addresses that keep failing are refused first,
        # and a run holds one of the address's attempts (kraken/policy/authgate.py).
        gate = AddressGate(self.limiter,
                           self.client_address.of(req.peer, req.header(b"x-forwarded-for")))
        await gate.check()
        return await self.verifier.verify(self.token(req), gate)

    def admit(self, call: Call) -> None:
        """Reserve the record's place: refuse now rather than serve unrecorded."""
        if self.shutting_down or not self.meter.reserve():
            metrics.OVERLOAD_REJECTIONS.inc()
            shedding.refused("shutting_down" if self.shutting_down else self.meter.refusal)
            raise Overloaded("Kraken is overloaded; retry shortly")
        call.reserved = True

    def check_billing_caps(self, call: Call, principal: Principal) -> Principal:
        """From memory: the plan's monthly caps (429/402), the key's budgets (429/402) and a
        prepaid wallet (402), so every metered endpoint refuses before it takes a lease.

        Returns whom the rate limit applies to: the key, with its plan's limits where the
        key sets none (a limit set on the key wins; then the plan's; then ``[limits]``)."""
        if self.billing is None:
            return principal
        plan = self.billing.check(principal.customer_id, None, principal.plan)
        call.plan = plan.name  # the fee rule in price_call follows the same plan
        self.billing.check_key_budget(principal)  # the key's lifetime token/spend budget
        if plan.rpm or plan.tpm or plan.max_concurrent:
            return replace(principal, rpm=principal.rpm or plan.rpm,
                           tpm=principal.tpm or plan.tpm,
                           max_concurrent=principal.max_concurrent or plan.max_concurrent)
        return principal

    @staticmethod
    def hold_lease(call: Call, lease: Lease) -> None:
        """The key's rate-limit lease (the limiter raised 429 when over), released when the
        call ends; its limits go on the answer's headers."""
        call.lease = lease
        if lease.limit_requests:
            call.response_headers = lease.headers

    def release(self, call: Call) -> None:
        """Hand the lease back, charging the tokens used; never blocks the caller."""
        lease, call.lease = call.lease, None
        if lease is None or (lease.slot is None and not lease.tpm):
            return  # nothing held: no concurrency slot, no token budget
        usage = call.usage
        used = (usage.prompt_tokens or 0) + (usage.completion_tokens or 0) if usage else 0
        task = asyncio.get_running_loop().create_task(self.limiter.release(lease, tokens_used=used))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def check_model_allowed(self, principal: Principal, model: str) -> None:
        """400 for a model name no provider could have; 403 when the key's allow-list or the
        customer's plan does not include ``model``."""
        self.router.check_name(model)
        auth.check_model_allowed(principal, model)
        if self.billing is not None:
            self.billing.check_model(principal.customer_id, model, principal.plan)

    @staticmethod
    def classify(call: Call, endpoint: Endpoint, parsed: Parsed,
                 now: bool = True) -> LateTask | None:
        """Whether the answer streams, and the record's task type (``auto`` routes by it):
        set ``now``, or returned as a ``LateTask`` for once the upstream request is sent."""
        call.stream = endpoint.stream(parsed)
        if now:
            call.task_type = endpoint.task(parsed)
            return None
        return LateTask(call, endpoint, parsed)

    def route(self, call: Call, endpoint: Endpoint, model: str) -> tuple[Route, ...]:
        """The router's candidates for ``model`` (by ``call.task_type``), those the endpoint
        serves, in order; none served raises the endpoint's ``not_served``. Names the model on
        the record only once the router knows it: never free client text."""
        routes = self.router.candidates(model, task=call.task_type)
        call.model_requested = model
        serves = endpoint.serves
        if serves is None:
            return routes
        kept = tuple(r for r in routes if serves(r))
        if not kept and endpoint.not_served is not None:
            raise endpoint.not_served(model)
        return kept

    def dispatch(self, call: Call, endpoint: Endpoint, routes: tuple[Route, ...],
                 parsed: Parsed, sink: ResponseSink,
                 later: LateTask | None = None) -> Awaitable[None]:
        """Try candidates in order until one starts answering (fallback before first byte).
        (Not a coroutine itself: its frame would be held as long as the answer streams.)"""
        # Skips open circuits, bounds attempts, falls back on 429/5xx/connect/timeout only.
        upload = parsed.payload.get(UPLOAD)
        # the attempt and its arguments, not a closure: a lambda over them held six cells, its
        # tuple and itself for as long as the answer streams (GC-tracked, in every burst)
        return fallback.dispatch(
            self.router, call, routes if upload is None else routes[:1],  # read once: no retry
            self._attempt, sink, call, endpoint, parsed, sink, later)

    async def relay(self, route: Route, call: Call, endpoint: Endpoint, parsed: Parsed,
                    sink: ResponseSink, later: LateTask | None = None) -> str:
        """One upstream exchange (the route first: ``fallback.dispatch``'s attempt); what the
        provider turned away unprocessed (stale keep-alive, refused stream) is retried once.

        Returns the relay's final state (``relay.FAILED``: the provider broke mid-stream).
        The endpoint shapes the request for the route (its family reads the answer) and,
        when it declares one, gives the filter that re-says the answer for the client.
        ``later``: the call's task, classified once the request is on its way, or for a
        stream with its record (``journal``).
        """
        pool = route.provider.pool
        request: UpstreamRequest | None = endpoint.shape(route, parsed)
        make_filter = endpoint.response_filter
        filt = None if make_filter is None else make_filter(route, parsed)
        headers = self.authorize(call, route, request)
        trace = call.trace
        if trace is not None and self.tracing.propagation.allowed(
                route.provider.name, route.provider.family.cfg.kind):
            headers = [*headers, *trace.upstream_headers()]  # self-hosted or listed only
        out: ResponseSink | None = None
        if request.family.signed is not None:  # e.g. an OAuth2 token, exchanged when due
            headers = await request.family.signed(headers)
        family, hide_usage = request.family, request.hide_usage
        for fresh_retry in (False, True):
            if request is None:  # the retry: the same request again (shape is a pure function)
                request = endpoint.shape(route, parsed)
            conn = await pool.acquire(conn if fresh_retry else None)  # retry: elsewhere (h2)
            call.sent_ns = time.perf_counter_ns()
            upload = parsed.payload.get(UPLOAD)
            # Sent first: the provider works while the relay that reads its answer is built.
            conn.send(request.method, request.target, headers, request.body,
                      more=upload is not None)
            if out is None:  # a non-streamed answer is held (bounded): its head carries the cost
                out = answer_sink(sink, call, parsed.req)
            # positional (stream, hide_usage, on_complete, on_ended, response_filter, loop):
            # a class call's keywords build a dict and unpack it again, ~380 ns here
            relay = Relay(call, out, family, call.stream, hide_usage,
                          partial(self._journal, call), self._count, filt, pool.loop)
            conn.expect(relay)
            # Not held while the answer streams: orjson's output keeps >= 4 KiB of capacity.
            request = None
            call.stamp()  # off the first byte's path: the provider is working meanwhile
            if later is not None:
                if call.stream:  # with its record, after the last byte: a burst's other
                    call.late_task = later  # streams' first bytes wait on what runs here
                else:
                    later()
            sink.set_producer(conn)
            try:
                await (relay.done if upload is None else upload.relay(conn, relay.done))
                return relay.state
            except UpstreamError:
                stale = conn.used > 1 and not conn.received_any and not relay.started
                conn.abort()
                if stale and not fresh_retry and upload is None:
                    continue
                raise
            except BaseException:
                relay.cancel()
                conn.abort()  # client gone or shutdown: the provider call is cancelled now
                raise
            finally:
                sink.set_producer(None)
                pool.release(conn)

    @staticmethod
    def authorize(call: Call, route: Route, request: UpstreamRequest) -> Headers:
        """The request's headers, with the customer's own key for this route's provider kind
        if it has one, placed where the request's family puts it (Gemini native:
        ``x-goog-api-key``)."""
        key = call.byok_keys.get(route.provider.family.cfg.kind) if call.byok_keys else None
        call.byok = False
        if key is None:
            return request.headers
        if isinstance(key, ByokKeyUnusable):
            # Never fall back to the operator's key behind the customer's back. A fresh error:
            # re-raising the cached instance would grow its traceback on every request.
            raise ByokKeyUnusable(None, key.message)
        authorized = request.family.authorized
        if authorized is None:  # a family without BYOK support: managed access
            return request.headers
        call.byok = True
        return authorized(request.headers, key)

    # ---- record --------------------------------------------------------------------
    def record(self, call: Call) -> None:
        """Push the one record of an admitted request (journal first, then queue), then count
        it (``count``)."""
        rec = self.journal(call)
        if rec is not None:
            self.count(call, rec)

    def journal(self, call: Call) -> RequestRecord | None:
        """What of ``record`` must precede the response's end (ARCHITECTURE rule 5): the record
        priced, journalled, queued (None: not admitted, or made already). A relay ends the
        response next and ``count``s after, in the same loop turn: its end leaves ~20 us sooner."""
        if call.recorded or not call.reserved:
            return None
        call.recorded = True
        call.end_ns = time.perf_counter_ns()
        if isinstance(call.usage, BatchUsage):  # a batch's results: its own model's price
            call.model_dispatched = call.usage.model
        if call.usage is not None:  # the label: never free client text
            price_call(call, self.model_label(call.provider, call.model_dispatched), self.prices,
                       self.fees)
        call.classify_late()  # a stream's task type (``relay``)
        rec = call.to_record()
        self.meter.record(rec)
        return rec

    def count(self, call: Call, rec: RequestRecord) -> None:
        """What only counts a journalled record: its span, the billing snapshots, the log line,
        the metrics. (Billing counts it before the next request is admitted either way: no
        await lies between ``journal`` and this.)"""
        if call.trace is not None:  # the span is built from the record, queued for export
            self.tracing.finish(call.trace, call.route, call.provider_kind, rec)
        if self.billing is not None:
            self.billing.note(rec)  # balance and caps count it before the batch is written
        if self.request_log is not None:
            self.request_log.emit(call, rec)
        model = self.model_label(call.provider, call.model_dispatched)
        metrics.requests_for(call.route, call.provider, model, call.status).inc()
        if call.ttfb_ns:
            metrics.ttfb_for(call.provider).observe(rec.ttfb_ms / 1000)
        metrics.latency_for(call.provider).observe(rec.latency_ms / 1000)
        metrics.OVERHEAD.observe(call.overhead_ns() / 1e9)
        usage = call.usage
        if usage is not None:  # a kind's series is made by its first tokens, not before
            provider, tokens = call.provider, metrics.tokens_for
            if usage.prompt_tokens:
                tokens(provider, model, "prompt").inc(usage.prompt_tokens)
            if usage.completion_tokens:
                tokens(provider, model, "completion").inc(usage.completion_tokens)
            if usage.cached_tokens:
                tokens(provider, model, "cached").inc(usage.cached_tokens)
            if usage.reasoning_tokens:
                tokens(provider, model, "reasoning").inc(usage.reasoning_tokens)
