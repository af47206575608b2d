"""Trying a request's candidates in order: fallback before the first byte, circuit breakers,
bounded attempts, and the live health that ``auto`` reads.

Shared by every relayed endpoint: each passes an ``attempt(route)`` that performs one upstream
exchange (raising a ``KrakenError`` when it is refused before the first byte, returning the
relay's final state otherwise). Which failures move on to the next candidate:

* connect failure, timeout, a provider that closed without answering (``UpstreamError``);
* a provider answer of 429 or 5xx;
* never a 4xx other than 429 (the request itself is at fault: another provider would say the
  same), and never once a byte has reached the client.

A candidate whose provider cannot honour a valid request (a parameter a Claude model lacks,
``n`` > 1: ``UnsupportedParameter``/``UnsupportedValue`` while shaping, before the send) is
passed over, first or later: the next candidate is tried. It is no attempt and no failure of
the provider (no breaker, no health average, no ``kraken_fallbacks_total``, no
``fallback_used``). When nothing serves, an earlier candidate's failure is the answer (the
client is not told its request is bad), or 503 ``circuit_open`` when a candidate that might
take it was skipped; when no candidate could take the request at all, the first refusal is
(the 400 naming the field).

Kraken's own bounds on a provider's pool - no connection freed within ``pool_wait_s``
(``PoolExhausted``), or this key already holds its share of the pool (``PoolShareExceeded``) -
are not the provider's failures: they feed neither the breaker nor the health averages (one
client holding every connection must not open the circuit for everyone), do not count as an
attempt, are counted in ``kraken_refused_total`` and move on to the next candidate. Nor is a
customer's own key (BYOK) that the provider refuses: the next candidate is tried, and if none
serves the answer is 401 ``byok_key_rejected``, the customer's to fix.

Customers who object to non-essential processing (``call.opted_out``) do not feed the moving
averages that ``auto`` optimises on. Their outcomes still count towards the circuit breaker:
it protects every request's service and keeps only a counter of the provider's failures.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from kraken import metrics
from kraken.errors import (
    ByokKeyRejected, KrakenError, PoolExhausted, PoolShareExceeded, UnsupportedParameter,
    UnsupportedValue, UpstreamCredentialsRejected, UpstreamError, UpstreamStatus,
)
from kraken.policy.breaker import CircuitOpen
from kraken.gateway.call import Call
from kraken.gateway.relay import FAILED
from kraken.policy.router import Route, Router
from kraken.http.exchange import ResponseSink
from kraken.shedding import refused

_NOT_HERE = (UnsupportedParameter, UnsupportedValue)
"""A valid request this candidate's provider cannot honour (raised while shaping it)."""
_SHED = {PoolExhausted: "pool_exhausted", PoolShareExceeded: "key_concurrency"}
"""Kraken's own refusals of an attempt, and their ``kraken_refused_total`` reason."""

Attempt = Callable[..., Awaitable[object]]
"""One upstream exchange on a route (its first argument, then ``dispatch``'s ``args``); returns
the relay's final state (``FAILED`` = broke mid-stream)."""


def falls_back(exc: KrakenError) -> bool:
    """Would another candidate be worth trying after this error before the first byte?"""
    if isinstance(exc, UpstreamStatus):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, UpstreamError)


async def dispatch(router: Router, call: Call, routes: tuple[Route, ...] | list[Route],
                   attempt: Attempt, sink: ResponseSink, *args: object) -> None:
    """Try ``routes`` in order until one starts answering (each try: ``attempt(route, *args)``);
    raise the last failure otherwise. Candidates whose provider's circuit is open are skipped
    (not counted as attempts; the record says ``fallback_used`` and ``circuit_open`` when
    nothing else failed); at most ``router.max_attempts`` are tried. ``call`` ends up naming
    the route that answered (or failed last), ``fallback_used`` and the failed attempt's
    ``error_type``."""
    last: KrakenError | None = None
    refusal: tuple[KrakenError, Route] | None = None  # the first _NOT_HERE, and whose
    previous: str | None = None
    tried = wait_s = 0  # wait_s: the soonest an open circuit lets a probe through
    for route in routes:
        if tried >= router.max_attempts:
            break
        name = route.provider.name
        breaker = router.breakers.get(name)
        if breaker is not None and not breaker.allow():
            wait = breaker.retry_after_s()
            wait_s = min(wait_s, wait) if wait_s else wait
            metrics.CIRCUIT_SKIPS.labels(name).inc()
            call.error_type = call.error_type or CircuitOpen.error_type
            previous = name  # serving from a later candidate is a fallback
            continue
        if previous is not None:
            call.fallback_used = True
            metrics.FALLBACKS.labels(previous).inc()
        tried += 1
        call.provider, call.model_dispatched = name, route.model
        call.provider_kind = route.provider.family.cfg.kind
        try:
            with route.provider.pool.claim(call.key_id):
                outcome = await attempt(route, *args)
        except (PoolExhausted, PoolShareExceeded) as exc:  # ours, not the provider's
            refused(_SHED[type(exc)])
            tried -= 1
            if breaker is not None:
                breaker.release()  # a half-open probe that never reached the provider
            call.error_type, last, previous = exc.error_type, exc, name
        except KrakenError as exc:
            if not falls_back(exc):
                if isinstance(exc, UpstreamStatus):
                    if breaker is not None:
                        breaker.success()  # the provider answered; the request is at fault
                    raise
                if breaker is not None:  # refused before the send (its shape, a BYOK key)
                    breaker.release()
                if not isinstance(exc, _NOT_HERE):
                    raise
                tried -= 1  # this provider cannot take the request (e.g. a parameter Claude
                refusal = refusal or (exc, route)  # lacks): another may; none failed here
                continue
            if call.byok and isinstance(exc, UpstreamCredentialsRejected):
                if breaker is not None:  # one customer's bad key must not open the circuit
                    breaker.release()  # for every customer of the provider
                exc = ByokKeyRejected(f"provider {name} rejected your own provider key (BYOK)")
            else:
                metrics.UPSTREAM_ERRORS.labels(name, exc.error_type).inc()
                _learn(router, call, route, failed=True)
            if sink.started:
                raise exc
            call.error_type, last, previous = exc.error_type, exc, name
        except BaseException:
            if breaker is not None:
                breaker.release()  # cancelled: no outcome to learn from
            raise
        else:
            _learn(router, call, route, failed=outcome == FAILED)  # FAILED: broke mid-stream
            return
    if last is not None:
        raise last
    if refusal is not None and not wait_s:  # no candidate could take it (none was skipped)
        exc, route = refusal
        call.provider, call.model_dispatched = route.provider.name, route.model
        call.provider_kind = route.provider.family.cfg.kind
        raise exc
    raise CircuitOpen("Every provider for this model is failing; retry in a few seconds",
                      retry_after_s=wait_s or 1)


def _learn(router: Router, call: Call, route: Route, *, failed: bool) -> None:
    """Tell the provider's breaker, and the route's health averages unless the customer
    opted out, how the attempt went."""
    name, model = route.provider.name, route.model
    breaker = router.breakers.get(name)
    if breaker is not None:
        if failed:
            breaker.failure()
        else:
            breaker.success()
    if call.opted_out:
        return
    if failed:
        router.health.failure(name, model)
    else:
        router.health.success(name, model, _ttfb_ms(call))


def _ttfb_ms(call: Call) -> float | None:
    """The provider's own time to first byte on the attempt that answered."""
    first = call.ttfb_ns or call.head_ns
    if not first or not call.sent_ns or first < call.sent_ns:
        return None
    return (first - call.sent_ns) / 1e6
