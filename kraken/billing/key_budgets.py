"""Per-key lifetime budgets (``api_keys.token_budget`` / ``spend_budget_usd``), answered from memory.

The budget itself travels on the ``Principal`` (the key cache sees an update within 1 s through
``key_events``); this module keeps what the key has *used* so far, for keys that have a budget:

- tokens = prompt + completion tokens of every recorded request of the key;
- spend  = cost_usd + kraken_fee_usd in micro-dollars (``wallet.usage_micros``): what the customer
  pays, the same amount the wallet is debited, so a spend budget caps the key's share of the bill.

Totals are lifetime sums over ``requests.key_id`` (index ``requests_key_ts``), re-read by ``refresh``
for budgeted keys only, plus what this process committed since and what it recorded but has not
written yet (the same three layers as the monthly caps in ``guard.py``). The snapshot is bounded:
at most ``max_keys`` keys (most recently created first), exported as a metric. A key whose budget
was set after the last refresh is not known yet: it is admitted (fail-open for at most one refresh,
which such a key triggers at once) rather than refused on a guess.

Lifetime totals come from ``requests``, so a retention policy that purges request metadata also
shrinks the keys' used budgets; request metadata is kept by default.

Refusal works on the snapshot, like the monthly caps: requests already in flight when the budget
runs out still complete; the next request is refused.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from kraken import metrics
from kraken.billing import wallet
from kraken.errors import QuotaExceeded
from kraken.store.interface import Store
from kraken.store.record import RequestRecord

log = logging.getLogger("kraken.billing")

DEFAULT_MAX_KEYS = 100_000
"""Budgeted keys tracked per process (two small ints each); more are logged and left unchecked."""

_MAX_WANTED = 1_000

_REFUSED = {reason: metrics.BILLING_REFUSALS.labels(reason)
            for reason in ("key_token_budget", "key_spend_budget")}


class KeyTokenBudgetExceeded(QuotaExceeded):
    """The key's lifetime token budget is used up; it does not reset, so no Retry-After, and
    ``x-should-retry: false`` (from ``QuotaExceeded``) stops SDKs retrying the 429."""

    status = 429
    code = "key_token_budget_exceeded"


class KeySpendBudgetExceeded(QuotaExceeded):
    code = "key_spend_budget_exceeded"


def usd_budget_micros(usd: float) -> int:
    """``spend_budget_usd`` (REAL) in micro-dollars, rounded to the nearest."""
    return round(usd * 1_000_000)


def _tokens(rec: RequestRecord) -> int:
    return (rec.prompt_tokens or 0) + (rec.completion_tokens or 0)


class KeyBudgets:
    """Used tokens and spend of budgeted keys, and the refusal when a budget is used up."""

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._totals: dict[str, list[int]] = {}
        """key id -> [tokens, spend_micros]: last refresh + committed since."""
        self._unflushed: dict[str, list[int]] = {}
        """key id -> [tokens, spend_micros] recorded by this process, not yet committed."""
        self._pending: tuple[Sequence[RequestRecord], Sequence[RequestRecord],
                             tuple[Sequence[int], Mapping[str, int]]] | None = None
        self._wanted: set[str] = set()
        """Budgeted keys seen on the hot path but not in the snapshot: loaded by the next refresh."""
        self.wake: Callable[[], None] | None = None
        """Called (no arguments) when a refresh is wanted sooner than the interval."""
        self._warned_cap = False
        self._sizes = (metrics.BILLING_SNAPSHOT_ENTRIES.labels("key_budgets"),
                       metrics.BILLING_SNAPSHOT_ENTRIES.labels("key_unwritten"))
        """The snapshot-size gauges, looked up once: they are set after every batch."""
        self._export()

    # -- hot path ------------------------------------------------------------------------

    def used(self, key_id: str) -> tuple[int, int] | None:
        """(tokens, spend micro-dollars) used by the key, or None when it is not tracked."""
        t = self._totals.get(key_id)
        if t is None:
            return None
        p = self._unflushed.get(key_id)
        return (t[0] + p[0], t[1] + p[1]) if p else (t[0], t[1])

    def check(self, key_id: str, token_budget: int | None, spend_budget_usd: float | None) -> None:
        """Refuse (429 / 402) when the key's budget is used up. Memory only; never names the key."""
        if token_budget is None and spend_budget_usd is None:
            return
        used = self.used(key_id)
        if used is None:
            if len(self._wanted) < _MAX_WANTED and key_id not in self._wanted:
                self._wanted.add(key_id)
                if self.wake is not None:
                    self.wake()
            return
        tokens, spend = used
        if token_budget is not None and tokens >= token_budget:
            _REFUSED["key_token_budget"].inc()
            raise KeyTokenBudgetExceeded(
                f"This API key's token budget is used up: {tokens} of {token_budget} tokens. "
                "Raise the key's token_budget or use another key.")
        if spend_budget_usd is not None:
            cap = usd_budget_micros(spend_budget_usd)
            if spend >= cap:
                _REFUSED["key_spend_budget"].inc()
                raise KeySpendBudgetExceeded(
                    f"This API key's spend budget is used up: {wallet.micros_to_usd(spend)} of "
                    f"{wallet.micros_to_usd(cap)} USD (provider cost plus Kraken fee). "
                    "Raise the key's spend_budget_usd or use another key.")

    def note(self, rec: RequestRecord, micros: int | None = None) -> None:
        """A request of a tracked key ended: count it before the writer commits it.

        ``micros``: the record's ``wallet.usage_micros`` when the caller has it already."""
        key = rec.key_id
        if key is None or (key not in self._totals and key not in self._wanted):
            return
        tokens = _tokens(rec)
        if micros is None:
            micros = wallet.usage_micros(rec)
        if tokens or micros:
            p = self._unflushed.setdefault(key, [0, 0])
            p[0] += tokens
            p[1] += micros

    # -- writer side -------------------------------------------------------------------

    def in_batch(self, written: Sequence[RequestRecord], new: Sequence[RequestRecord],
                 costs: tuple[Sequence[int], Mapping[str, int]] | None = None) -> None:
        """Remember the batch (all records, and those not stored before) until it commits.

        ``costs``: the batch's ``wallet.batch_costs(written)``, if the caller has it."""
        self._pending = (written, new, costs or wallet.batch_costs(written))

    def committed(self) -> None:
        """Move the batch from 'unwritten' to the totals (only records new to the store)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        written, new, (micros, by_id) = pending
        # Only budgeted keys are held: with none (the usual case) each loop would look up
        # every record of the batch in an empty dict, on the event loop.
        if self._unflushed:
            for rec, m in zip(written, micros):
                p = self._unflushed.get(rec.key_id) if rec.key_id else None
                if p is not None:
                    p[0] -= _tokens(rec)
                    p[1] -= m
                    if p[0] <= 0 and p[1] <= 0:  # records replayed at startup were never noted
                        del self._unflushed[rec.key_id]
        if self._totals:
            for rec in new:
                t = self._totals.get(rec.key_id) if rec.key_id else None
                if t is not None:
                    t[0] += _tokens(rec)
                    t[1] += by_id[rec.request_id]
        self._export()

    # -- refresh -----------------------------------------------------------------------

    async def refresh(self, store: Store) -> None:
        """Reload the lifetime totals of every budgeted key (at most ``max_keys``)."""
        keys = await self._budgeted_keys(store)
        keys.extend(k for k in self._wanted if k not in keys)
        wanted = set(self._wanted)
        totals: dict[str, list[int]] = {k: [0, 0] for k in keys}
        for key_id, tokens, spend in await store.billing.key_totals(store, keys):
            totals[key_id] = [tokens, spend]
        self._totals = totals
        self._wanted -= wanted
        for key in [k for k in self._unflushed if k not in totals and k not in self._wanted]:
            del self._unflushed[key]
        self._export()

    async def _budgeted_keys(self, store: Store) -> list[str]:
        # A StoreError (server restarting, a statement timeout) propagates: the refresh keeps
        # the snapshot it has and reads again next time.
        rows = await store.billing.budgeted_keys(store, self.max_keys + 1)
        if len(rows) > self.max_keys:
            rows = rows[:self.max_keys]
            if not self._warned_cap:
                self._warned_cap = True
                log.warning("more than %d API keys have budgets; only the %d newest are enforced",
                            self.max_keys, self.max_keys)
        return rows

    def __len__(self) -> int:
        return len(self._totals)

    def _export(self) -> None:
        totals, unwritten = self._sizes
        totals.set(len(self._totals))
        unwritten.set(len(self._unflushed))

