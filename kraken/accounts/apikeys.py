"""Kraken API keys in the database: create (plaintext returned once), list, update, revoke,
delete. Only the bcrypt hash and the public key id are stored; no function here returns or
logs the hash.

Every change to a key row (and its deletion, including by cascade) makes a trigger append a
``key_events`` row; each Kraken process polls that table and evicts the key from its caches
within 1 s (kraken/accounts/revocation.py). With Redis, ``revoke_key``/``delete_key`` also
publish the key id for an even faster eviction across hosts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from kraken.accounts import validation as v
from kraken.accounts.validation import NotFoundError, ValidationError
from kraken.accounts.keys import DEFAULT_ROUNDS, generate_checked_key, hash_key

_UNSET: Any = object()


class TooManyKeys(v.ConflictError):
    """The customer already holds the most keys it may make itself (``max_keys``): 409."""

    code = "too_many_keys"


def _too_many(max_keys: int) -> TooManyKeys:
    return TooManyKeys("key", f"this account already holds {max_keys} keys, the most it may make "
                              "itself: delete unused ones first")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as listed: never its secret, never its hash."""

    id: str
    customer_id: str
    org_id: str | None
    name: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    allowed_models: tuple[str, ...] | None
    """None = every model."""
    rpm: int
    tpm: int
    max_concurrent: int
    token_budget: int | None
    spend_budget_usd: float | None

    def status(self, now: float | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or time.time()):
            return "expired"
        return "active"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "customer_id": self.customer_id, "org_id": self.org_id,
            "name": self.name, "created_at": self.created_at, "expires_at": self.expires_at,
            "revoked_at": self.revoked_at, "status": self.status(),
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
            "rpm": self.rpm, "tpm": self.tpm, "max_concurrent": self.max_concurrent,
            "token_budget": self.token_budget, "spend_budget_usd": self.spend_budget_usd,
        }


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """``create_key``'s answer: ``plaintext`` is the only copy of the key; show it once."""

    key: ApiKey
    plaintext: str

    def __repr__(self) -> str:  # never print the secret by accident
        return f"CreatedKey(key={self.key!r}, plaintext='<hidden>')"


def api_key(row: tuple) -> ApiKey:
    """An ApiKey from a key row (``kraken.store.accounts_sql.KEY_COLS``, in field order)."""
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                  v.models_from_json(row[7]), row[8], row[9], row[10], row[11], row[12])


def _limits(rpm: Any, tpm: Any, max_concurrent: Any, token_budget: Any,
            spend_budget_usd: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rpm is not _UNSET:
        out["rpm"] = v.count(rpm, "rpm")
    if tpm is not _UNSET:
        out["tpm"] = v.count(tpm, "tpm")
    if max_concurrent is not _UNSET:
        out["max_concurrent"] = v.count(max_concurrent, "max_concurrent")
    if token_budget is not _UNSET:
        out["token_budget"] = v.count(token_budget, "token_budget", allow_none=True)
    if spend_budget_usd is not _UNSET:
        out["spend_budget_usd"] = v.usd(spend_budget_usd, "spend_budget_usd")
    return out


async def create_key(store, customer_id: str, *, name: str | None = None,
                     org_id: str | None = None, expires_at: float | None = None,
                     allowed_models: list[str] | None = None, rpm: int = 0, tpm: int = 0,
                     max_concurrent: int = 0, token_budget: int | None = None,
                     spend_budget_usd: float | None = None, env: str = "live",
                     rounds: int = DEFAULT_ROUNDS, max_keys: int | None = None) -> CreatedKey:
    """A new key for ``customer_id`` (optionally scoped to an organisation it belongs to).

    ``expires_at``: Unix seconds in the future, None = never. ``allowed_models``: public
    model names (as clients send them), None = all. rpm/tpm/max_concurrent: 0 = the plan's or
    [limits] default. Budgets: None = unlimited. bcrypt runs in a worker thread.
    ``max_keys``: TooManyKeys if the customer already holds that many (revoked ones count),
    counted in the inserting transaction under a lock per customer, so hosts creating keys at
    once cannot pass it together (and, before bcrypt, refused cheaply when plainly full).
    """
    customer_id = v.identifier(customer_id, "customer_id")
    org_id = None if org_id is None else v.identifier(org_id, "org_id")
    name = v.text(name, "name")
    expires_at = v.timestamp(expires_at, "expires_at", now=time.time())
    models = v.models(allowed_models)
    limits = _limits(rpm, tpm, max_concurrent, token_budget, spend_budget_usd)
    if env not in ("live", "test"):
        raise ValidationError("env", "must be live or test")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 4 <= rounds <= 16:
        raise ValidationError("rounds", "must be between 4 and 16")
    if max_keys is not None and await store.accounts.key_count(store, customer_id) >= max_keys:
        raise _too_many(max_keys)
    plaintext, key_id = generate_checked_key(env)
    hashed = await anyio.to_thread.run_sync(hash_key, plaintext, rounds)
    created_at = time.time()
    async with store.transaction() as tx:
        if max_keys is not None:
            await tx.accounts.lock(tx, "keys-customer:" + customer_id)
            if await tx.accounts.key_count(tx, customer_id) >= max_keys:
                raise _too_many(max_keys)
        if not await tx.accounts.customer_exists(tx, customer_id):
            raise NotFoundError("customer_id", "no such customer")
        if org_id is not None and not await tx.accounts.is_member(tx, org_id, customer_id):
            raise NotFoundError("org_id", "the customer is not a member of this organisation")
        await tx.accounts.insert_key(tx, (
            key_id, customer_id, org_id, name, hashed, created_at, expires_at,
            v.models_json(models), limits["rpm"], limits["tpm"], limits["max_concurrent"],
            limits["token_budget"], limits["spend_budget_usd"]))
    key = ApiKey(key_id, customer_id, org_id, name, created_at, expires_at, None, models,
                 limits["rpm"], limits["tpm"], limits["max_concurrent"], limits["token_budget"],
                 limits["spend_budget_usd"])
    return CreatedKey(key, plaintext)


async def get_key(store, key_id: str) -> ApiKey:
    key_id = v.identifier(key_id, "key_id")
    row = await store.accounts.key(store, key_id)
    if row is None:
        raise NotFoundError("key_id", "no such key")
    return api_key(row)


async def list_keys(store, *, customer_id: str | None = None, org_id: str | None = None,
                    personal: bool = False, include_revoked: bool = True,
                    after: str | None = None, limit: int | None = None) -> list[ApiKey]:
    """Keys (never hashes), newest first, filtered by customer and/or organisation (or, with
    ``personal``, only keys of no organisation); with ``limit``, a page of them after the key
    ``after`` (ValidationError naming ``after`` if that key is gone)."""
    if customer_id is not None:
        customer_id = v.identifier(customer_id, "customer_id")
    if org_id is not None:
        org_id = v.identifier(org_id, "org_id")
    position = None
    if after is not None:
        row = await store.accounts.key(store, v.identifier(after, "after"))
        if row is None:
            raise ValidationError("after", "no such key (deleted since the previous page?)")
        position = (row[4], row[0])
    rows = await store.accounts.keys(store, customer_id=customer_id, org_id=org_id,
                                     personal=personal, include_revoked=include_revoked,
                                     after=position, limit=limit)
    return [api_key(r) for r in rows]


async def update_key(store, key_id: str, *, name: Any = _UNSET, expires_at: Any = _UNSET,
                     allowed_models: Any = _UNSET, rpm: Any = _UNSET, tpm: Any = _UNSET,
                     max_concurrent: Any = _UNSET, token_budget: Any = _UNSET,
                     spend_budget_usd: Any = _UNSET) -> ApiKey:
    """Change a key's name, expiry, allow-list, limits or budgets (omitted = unchanged;
    None clears expiry/allow-list/budgets). Gateways pick the change up within 1 s."""
    key_id = v.identifier(key_id, "key_id")
    changes = _limits(rpm, tpm, max_concurrent, token_budget, spend_budget_usd)
    if name is not _UNSET:
        changes["name"] = v.text(name, "name")
    if expires_at is not _UNSET:
        changes["expires_at"] = v.timestamp(expires_at, "expires_at", now=time.time())
    if allowed_models is not _UNSET:
        changes["allowed_models"] = v.models_json(v.models(allowed_models))
    async with store.transaction() as tx:
        if changes:  # fixed column names only
            await tx.accounts.update_key(tx, key_id, changes)
        row = await tx.accounts.key(tx, key_id)
    if row is None:
        raise NotFoundError("key_id", "no such key")
    return api_key(row)


async def revoke_key(store, key_id: str, *, redis_url: str | None = None) -> ApiKey:
    """Revoke now (idempotent: the first revocation time is kept). Refused by every Kraken
    process sharing the database within 1 s; at once on hosts subscribed through Redis."""
    key_id = v.identifier(key_id, "key_id")
    async with store.transaction() as tx:
        await tx.accounts.revoke_key(tx, key_id, time.time())
        row = await tx.accounts.key(tx, key_id)
    if row is None:
        raise NotFoundError("key_id", "no such key")
    await _publish(redis_url, key_id)
    return api_key(row)


async def delete_key(store, key_id: str, *, redis_url: str | None = None) -> None:
    """Delete the key row (its hash is gone; secure_delete overwrites the page content)."""
    key_id = v.identifier(key_id, "key_id")
    async with store.transaction() as tx:
        if not await tx.accounts.delete_key(tx, key_id):
            raise NotFoundError("key_id", "no such key")
    await _publish(redis_url, key_id)


async def _publish(redis_url: str | None, key_id: str) -> None:
    if redis_url:
        from kraken.accounts.revocation import publish

        await publish(redis_url, [key_id])
