"""The hot path's billing checks, answered from memory: plan, monthly caps, wallet balance.

``BillingGuard.check`` is synchronous and does a few dict lookups. What it reads is kept fresh
off the hot path: the batch writer calls ``in_batch`` inside each batch's transaction (wallet
debits, monthly usage) and ``committed`` after it; a credit taken by this process (Stripe
webhook, admin API) calls ``wallet_changed``; ``refresh`` (every ``refresh_interval_s``) picks
up what other processes wrote - the CLI's credits, other workers' and hosts' credits and usage,
changed customer plans. The snapshots hold one entry per
customer (bounded by the accounts table) and are exported as a metric.

Per-key lifetime budgets (``check_key_budget``) live in ``key_budgets.py`` and are fed by the
same hooks; a budgeted key not yet in the snapshot wakes the refresh loop early.

Prepaid refusal works on the snapshot, so a wallet can end slightly below zero: requests
already in flight when the balance ran out are still debited in full (the service was
delivered); the next request gets 402.
"""
from __future__ import annotations

import calendar
import functools
import logging
import time
from collections.abc import Callable, Container, Sequence

import anyio

from kraken import metrics
from kraken.billing import wallet
from kraken.billing.key_budgets import DEFAULT_MAX_KEYS, KeyBudgets
from kraken.billing.plans import Plan, PlanBook
from kraken.errors import ModelNotAllowed, QuotaExceeded
from kraken.store.errors import StoreError
from kraken.store.interface import Store, Tx
from kraken.store.record import RequestRecord

log = logging.getLogger("kraken.billing")

_MIN_WAKE_GAP_S = 0.2
_usage_micros = wallet.usage_micros

_REFUSED = {reason: metrics.BILLING_REFUSALS.labels(reason) for reason in (
    "model_not_allowed", "monthly_token_cap", "monthly_spend_cap", "insufficient_balance")}


class MonthlyTokenCapReached(QuotaExceeded):
    status = 429
    code = "monthly_token_cap_exceeded"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        # Retry-After says when it resets (days away): no SDK retry can help before then.
        return [(b"retry-after", str(self.retry_after_s).encode()), *super().headers]


class MonthlySpendCapReached(QuotaExceeded):
    code = "monthly_spend_cap_exceeded"


class InsufficientBalance(QuotaExceeded):
    error_type = "insufficient_balance"
    code = "insufficient_balance"


def month_of(ts: float) -> str:
    """The calendar month (UTC) a Unix time falls in, as 'YYYY-MM'."""
    return _month_of_day(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _month_of_day(day: int) -> str:
    # Per UTC day, cached: the writer asks twice per record (gmtime + strftime, ~1.5 µs).
    return time.strftime("%Y-%m", time.gmtime(day * 86400))


def month_span(month: str) -> tuple[str, float, float]:
    """(month, start, end): [start, end) is the month 'YYYY-MM' in Unix time, ``month_of(ts) ==
    month`` exactly when ``start <= ts < end``: two float compares where the writer called
    ``month_of`` per record. One tuple, so a reader in another thread sees one month's three."""
    year, mon = int(month[:4]), int(month[5:7])
    nxt = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return (month, float(calendar.timegm((year, mon, 1, 0, 0, 0))),
            float(calendar.timegm((*nxt, 1, 0, 0, 0))))


class _Tally:
    """A written batch summed in one pass, in the writer's thread: the usual five walks over
    the batch (new records, costs, debits, monthly sums; unwritten and monthly usage again on
    the event loop after the commit) become one, and ``committed`` works per customer.

    ``new``: the first record of each request id not ``seen`` in the store (what
    ``wallet.new_records`` keeps); ``micros``/``by_id``: ``wallet.batch_costs``; ``debits``:
    ``wallet.debit_usage``'s rows; ``month_sums``: (customer, month) -> [tokens, spend] of the
    new records; ``unwritten``: customer -> [micros, tokens] of every record (noted or not).
    Summing per customer clamps as the record-by-record walk did as long as every amount is
    >= 0 (then the count only falls); ``in_order`` says one was not."""

    __slots__ = ("by_id", "debited", "debits", "in_order", "micros", "month_sums", "new",
                 "unwritten")

    def __init__(self, records: Sequence[RequestRecord], seen: Container[str],
                 span: tuple[str, float, float]) -> None:
        month, start, end = span
        self.micros = micros = []
        self.by_id = by_id = {}
        self.new = new = []
        self.debits = debits = []
        self.month_sums = sums = {}
        self.unwritten = unwritten = {}
        self.debited = 0
        in_order = False
        usage_micros = wallet.usage_micros
        for rec in records:
            m = usage_micros(rec)
            micros.append(m)
            customer = rec.customer_id
            tokens = (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
            rid = rec.request_id
            if rid not in by_id:
                by_id[rid] = m
                if rid not in seen:
                    new.append(rec)
                    if customer:
                        if m > 0:
                            debits.append((customer, -m, rid))
                        ts = rec.ts
                        s = sums.setdefault(
                            (customer, month if start <= ts < end else month_of(ts)), [0, 0])
                        s[0] += tokens
                        s[1] += m
            if customer:
                if m < 0 or tokens < 0:
                    in_order = True
                u = unwritten.get(customer)
                if u is None:
                    unwritten[customer] = [m, tokens]
                else:
                    u[0] += m
                    u[1] += tokens
        self.in_order = in_order


def seconds_to_next_month(now: float) -> int:
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return max(1, int(calendar.timegm((year, month, 1, 0, 0, 0)) - now) + 1)


class BillingGuard:
    """In-memory billing state for one process, and the writer hooks that keep it current."""

    def __init__(self, plans: PlanBook, *, min_balance_micros: int = 0,
                 clock: Callable[[], float] = time.time,
                 max_budget_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.plans = plans
        self.min_balance_micros = min_balance_micros
        self._clock = clock
        self._customer_plans: dict[str, str] = {}
        self._balances: dict[str, int] = {}
        self._usage: dict[str, list[int]] = {}  # customer -> [tokens, spend_micros] this month
        self._month = month_of(clock())
        self._span = month_span(self._month)
        self._last_tx_id = 0
        self._pending: tuple[Sequence[RequestRecord], list[RequestRecord], dict[str, int],
                             tuple[list[int], dict[str, int]]] | None = None
        self._unflushed: dict[str, list[int]] = {}
        """customer -> [micro-dollars, tokens] recorded but not yet committed by the writer."""
        self.key_budgets = KeyBudgets(max_keys=max_budget_keys)
        self.key_budgets.wake = self._wake_refresh
        self._wake: anyio.Event | None = None
        self._sizes = tuple(metrics.BILLING_SNAPSHOT_ENTRIES.labels(table)
                            for table in ("balances", "usage", "customer_plans", "unwritten"))
        """The snapshot-size gauges, looked up once: they are set after every batch."""
        self._export_sizes()

    # -- hot path: synchronous, memory only ---------------------------------------------

    def plan_for(self, customer_id: str | None, plan_name: str | None = None) -> Plan:
        """The customer's plan (``customers.plan``), or the default plan.

        ``plan_name`` (e.g. carried on the Principal) wins over the snapshot.
        """
        if plan_name is None and customer_id is not None:
            plan_name = self._customer_plans.get(customer_id)
        return self.plans.get(plan_name)

    def balance_micros(self, wallet_id: str) -> int:
        """The balance: last committed, less usage recorded but not yet written."""
        pending = self._unflushed.get(wallet_id)
        return self._balances.get(wallet_id, 0) - (pending[0] if pending else 0)

    def usage(self, customer_id: str) -> tuple[int, int]:
        """(tokens, spend in micro-dollars) this calendar month, including unwritten usage.

        The snapshot holds the month of the last refresh: once the clock is past its end it is
        last month's and counts nothing, or a client retrying at the 1st as its 429 told it
        would be refused again (with a Retry-After of a whole month) until the next refresh."""
        u = self._usage.get(customer_id)
        if u is not None and self._clock() >= self._span[2]:
            u = None
        tokens, spend = (u[0], u[1]) if u else (0, 0)
        pending = self._unflushed.get(customer_id)
        if pending:
            tokens, spend = tokens + pending[1], spend + pending[0]
        return tokens, spend

    def note(self, rec: RequestRecord) -> None:
        """A request just ended (hot path, after the response): count it before it is written.

        Without this a burst finishing inside one flush interval would all be admitted on
        the same stale balance; with it, only requests already in flight can overdraw.
        """
        micros = _usage_micros(rec)
        self.key_budgets.note(rec, micros)
        customer = rec.customer_id
        if not customer:
            return
        tokens = (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
        if micros or tokens:
            p = self._unflushed.get(customer)  # no new [0, 0] per request, as setdefault made
            if p is None:
                self._unflushed[customer] = [micros, tokens]
            else:
                p[0] += micros
                p[1] += tokens

    def check_key_budget(self, principal: object) -> None:
        """Refuse (429 ``key_token_budget_exceeded`` / 402 ``key_spend_budget_exceeded``) a key
        whose lifetime budget is used up; the budget is the one on the Principal (fresh within
        1 s of an update), the usage is this guard's snapshot."""
        tokens = getattr(principal, "token_budget", None)
        spend = getattr(principal, "spend_budget_usd", None)
        if tokens is not None or spend is not None:
            self.key_budgets.check(principal.key_id, tokens, spend)  # type: ignore[attr-defined]

    def check_model(self, customer_id: str, model: str, plan_name: str | None = None) -> None:
        """Refuse (403) a model outside the customer's plan."""
        plan = self.plan_for(customer_id, plan_name)
        if plan.allowed_models and model not in plan.allowed_models:
            _REFUSED["model_not_allowed"].inc()
            raise ModelNotAllowed(
                f"Model '{model[:100]}' is not available on the '{plan.name}' plan. "
                f"Allowed models: {', '.join(plan.allowed_models)}")

    def check(self, customer_id: str, model: str | None = None, plan_name: str | None = None) -> Plan:
        """Refuse a request the plan's monthly caps or the wallet do not cover; return the plan.

        With ``model`` the plan's allowed models are checked too (``check_model``).
        """
        if model is not None:
            self.check_model(customer_id, model, plan_name)
        plan = self.plan_for(customer_id, plan_name)
        if plan.monthly_token_cap or plan.monthly_spend_cap_usd:
            tokens, spend = self.usage(customer_id)
            if plan.monthly_token_cap and tokens >= plan.monthly_token_cap:
                _REFUSED["monthly_token_cap"].inc()
                raise MonthlyTokenCapReached(
                    f"Monthly token cap reached: {tokens} of {plan.monthly_token_cap} tokens used "
                    f"this month on the '{plan.name}' plan; it resets on the 1st (UTC).",
                    retry_after_s=seconds_to_next_month(self._clock()))
            cap = plan.monthly_spend_cap_micros
            if cap and spend >= cap:
                _REFUSED["monthly_spend_cap"].inc()
                raise MonthlySpendCapReached(
                    f"Monthly spend cap reached: {wallet.micros_to_usd(spend)} of "
                    f"{wallet.micros_to_usd(cap)} USD used this month on the '{plan.name}' plan.")
        if plan.prepaid:
            bal = self.balance_micros(customer_id)
            if bal <= 0 or bal < self.min_balance_micros:
                _REFUSED["insufficient_balance"].inc()
                raise InsufficientBalance(
                    f"Insufficient balance: your prepaid wallet holds {wallet.micros_to_usd(bal)} USD"
                    + (f" (minimum {wallet.micros_to_usd(self.min_balance_micros)} USD)"
                       if self.min_balance_micros > 0 else "")
                    + ". Top up your wallet to continue.")
        return plan

    # -- writer side: inside the batch transaction, then after commit ---------------------

    async def in_batch(self, tx: Tx, records: Sequence[RequestRecord]) -> None:
        """Debit wallets and add monthly usage for the batch's new records (same transaction).

        Records already stored (a journal replay) are recognised and neither debited nor
        counted twice: SQLite runs this before the batch's INSERT OR IGNORE; PostgreSQL after
        its insert, which names the rows it stored (``tx.inserted``).
        """
        self._pending = None
        seen = await tx.billing.seen_requests(tx, [r.request_id for r in records])
        tally = _Tally(records, seen, self._span)  # one read of the span: refresh may change it
        self.key_budgets.in_batch(records, tally.new, (tally.micros, tally.by_id))
        balances: dict[str, int] = {}
        if tally.debits:
            balances = await tx.billing.debit(tx, tally.debits, time.time())
            tally.debited = sum(1 for debit in tally.debits if debit[0] in balances)
        if tally.month_sums:
            await tx.billing.add_usage(
                tx, [(c, m, t, s) for (c, m), (t, s) in tally.month_sums.items()])
        self._pending = (records, tally, balances)

    in_batch.sqlite_inline = True  # type: ignore[attr-defined]
    """SQLite runs ``in_batch`` in its driver's thread, inside the batch's one job
    (kraken/store/sqlite.py): it awaits only ``tx``'s methods, and of this object it only sets
    ``_pending`` (and the key budgets'), which ``committed`` reads on the loop after the job."""

    def committed(self) -> None:
        """The batch committed: fold its debits and usage into the snapshots (per customer:
        the batch was summed in ``in_batch``, off the event loop)."""
        self.key_budgets.committed()
        pending, self._pending = self._pending, None
        if pending is None:
            return
        written, tally, balances = pending
        if tally.in_order:
            self._unflush_each(written, tally.micros)
        else:  # now in the store: no longer counted as unwritten
            unflushed = self._unflushed
            for customer, (micros, tokens) in tally.unwritten.items():
                p = unflushed.get(customer)
                if p is not None:
                    p[0] -= micros
                    p[1] -= tokens
                    if p[0] <= 0 and p[1] <= 0:  # replays at startup were never noted: clamp
                        del unflushed[customer]
        self._balances.update(balances)
        metrics.WALLET_DEBITS.inc(tally.debited)
        month = self._span[0]
        for (customer, of_month), (tokens, spend) in tally.month_sums.items():
            if of_month == month:
                u = self._usage.setdefault(customer, [0, 0])
                u[0] += tokens
                u[1] += spend
        self._export_sizes()

    def _unflush_each(self, written: Sequence[RequestRecord], micros: Sequence[int]) -> None:
        """Record by record, clamping as it goes: a batch with a negative amount, where the
        per-customer sum could cross zero differently (never from Kraken's own records)."""
        for rec, m in zip(written, micros):
            p = self._unflushed.get(rec.customer_id) if rec.customer_id else None
            if p is not None:
                p[0] -= m
                p[1] -= (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)
                if p[0] <= 0 and p[1] <= 0:
                    del self._unflushed[rec.customer_id]

    def note_balance(self, wallet_id: str, balance_micros: int) -> None:
        """A top-up in this process: the next request sees it at once."""
        self._balances[wallet_id] = balance_micros
        self._export_sizes()

    async def wallet_changed(self, store: Store, wallet_id: str) -> None:
        """A credit committed by this process (Stripe webhook, admin API): its balance, read
        back from ``store``, is seen by the next request, not at the next refresh."""
        self.note_balance(wallet_id, await wallet.balance(store, wallet_id))

    # -- refresh: what other processes wrote --------------------------------------------

    async def refresh(self, store: Store) -> None:
        """Reload balances changed since the last refresh, this month's usage, customer plans."""
        changed, self._last_tx_id = await wallet.balances_since(store, self._last_tx_id)
        self._balances.update(changed)
        month = month_of(self._clock())
        rows = await store.billing.usage_of_month(store, month)
        self._month, self._span = month, month_span(month)
        self._usage = {r[0]: [r[1], r[2]] for r in rows}
        # A failure here (server restarting, a statement timeout) propagates like the reads
        # above: the snapshot stays as it was and the next refresh reads again.
        plans = await store.billing.customer_plans(store)
        self._customer_plans = {r[0]: r[1] for r in plans}
        await self.key_budgets.refresh(store)
        self._export_sizes()

    async def run(self, store: Store, interval_s: float) -> None:
        """Refresh every ``interval_s`` until cancelled; a store error is logged and retried.

        A budgeted key missing from the snapshot wakes it sooner (at most every 0.2 s).
        """
        last = time.monotonic()
        while True:
            self._wake = anyio.Event()
            with anyio.move_on_after(interval_s) as timer:
                await self._wake.wait()
            if not timer.cancelled_caught:  # woken: keep early refreshes apart
                await anyio.sleep(max(0.0, last + _MIN_WAKE_GAP_S - time.monotonic()))
            last = time.monotonic()
            try:
                await self.refresh(store)
            except StoreError as exc:
                metrics.STORE_ERRORS.labels(exc.reason).inc()
                log.warning("billing refresh failed, will retry: %s", exc)

    def _wake_refresh(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _export_sizes(self) -> None:
        balances, usage, plans, unwritten = self._sizes
        balances.set(len(self._balances))
        usage.set(len(self._usage))
        plans.set(len(self._customer_plans))
        unwritten.set(len(self._unflushed))
