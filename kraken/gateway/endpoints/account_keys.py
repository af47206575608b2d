"""``/v1/account/keys``: a caller's Kraken keys. Developers see and change their own keys in
the calling key's scope; admins and owners (``manage_keys``) every key of the organisation,
listed a page at a time (account_paging.py), but only an owner changes an owner's key (an
admin revoking them all would lock the owners out, as demoting them would; account_members
has the same rule for roles). A new key belongs to the caller, in the calling key's
organisation, and is never wider than the calling key: its limits, allow-list, budgets and
expiry are bounded by the caller's own. Its secret is in the create answer only."""
from __future__ import annotations

from typing import Any

from kraken.accounts import service
from kraken.accounts import validation as v
from kraken.accounts.roles import can
from kraken.gateway.endpoints import account_paging as paging
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller, json_body
from kraken.gateway.endpoints.account_members import owner_only
from kraken.http.exchange import Request
from kraken.policy.ratelimit import LimitPolicy, limits_for

CREATE_FIELDS = ("name", "expires_at", "allowed_models", "rpm", "tpm", "max_concurrent",
                 "token_budget", "spend_budget_usd")
RATE_FIELDS = ("rpm", "tpm", "max_concurrent")
MAX_KEYS = 1000
"""Keys one customer holds (revoked ones included: listings show them) for it to make another:
each is a row of every later listing and of the organisation's usage filter. Exact across
hosts: the service counts it in the inserting transaction (``service.create_key``)."""


class WiderThanCaller(service.ForbiddenError):
    """A requested limit is wider than the calling key's own."""

    code = "wider_than_caller"


def in_scope(caller: Caller, key: service.ApiKey) -> bool:
    """Whether ``caller`` may see and change ``key``."""
    if caller.org_id is not None and can(caller.role, "manage_keys"):
        return key.org_id == caller.org_id
    return key.customer_id == caller.customer_id and key.org_id == caller.org_id


def scope(caller: Caller) -> dict[str, Any]:
    """``in_scope`` as ``service.list_keys`` filters: a page holds only keys in scope."""
    if caller.org_id is not None and can(caller.role, "manage_keys"):
        return {"org_id": caller.org_id}
    if caller.org_id is None:
        return {"customer_id": caller.customer_id, "personal": True}
    return {"customer_id": caller.customer_id, "org_id": caller.org_id}


async def _key_to_change(api: AccountApi, caller: Caller, key_id: str) -> service.ApiKey:
    """The key, if ``caller`` may change it: 404 out of scope, 403 ``owner_required`` for
    another member's key in the organisation when that member is an owner and the caller not."""
    try:
        key = await service.get_key(api.store, key_id)
    except service.NotFoundError:
        key = None
    if key is None or not in_scope(caller, key):
        raise service.NotFoundError("key_id", "no such key")
    if key.org_id is not None and key.customer_id != caller.customer_id and \
            await service.member_role(api.store, key.org_id, key.customer_id) == "owner":
        owner_only(caller, "key_id", "only an owner may revoke or delete an owner's key")
    return key


async def list_keys(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """One page of the keys in scope, newest first; ``after`` must be one of them (any other
    id, another organisation's or none, is the same 400)."""
    q = paging.query(req, ("limit", "after"))
    size = paging.limit(q.get("limit"))
    after = q.get("after") or None
    if after is not None:
        try:
            key = await service.get_key(api.store, after)
        except service.NotFoundError:
            key = None
        if key is None or not in_scope(caller, key):
            raise service.ValidationError("after", "no such key (deleted since the previous "
                                                   "page?)")
    keys = await service.list_keys(api.store, after=after, limit=size + 1, **scope(caller))
    return 200, paging.page(keys, size, lambda k: k.id, lambda k: k.as_dict())


def _rates(api: AccountApi, caller: Caller, body: dict[str, Any]) -> dict[str, int]:
    """rpm/tpm/max_concurrent: 0 means the [limits] default, so compare effective values."""
    policy = getattr(api.gateway.limiter, "policy", LimitPolicy())
    mine = limits_for(caller.principal, policy)
    out: dict[str, int] = {}
    for field in RATE_FIELDS:
        cap = getattr(mine, field)
        if field not in body:
            out[field] = cap
            continue
        value = v.count(body[field], field)
        effective = value or getattr(policy, field)
        if cap and not 0 < effective <= cap:
            raise WiderThanCaller(field, f"must be between 1 and {cap} (the calling key's)")
        out[field] = value
    return out


def _bounded(api: AccountApi, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    """The new key's settings, each no wider than the calling key's (403 naming the field);
    a value of the wrong type is left to the service's validation (400)."""
    mine = caller.key
    out: dict[str, Any] = {"name": body.get("name"), **_rates(api, caller, body)}
    models = v.models(body["allowed_models"]) if "allowed_models" in body else mine.allowed_models
    if mine.allowed_models is not None and (
            models is None or not set(models) <= set(mine.allowed_models)):
        raise WiderThanCaller("allowed_models", "must be a subset of the calling key's")
    out["allowed_models"] = None if models is None else list(models)
    for field in ("token_budget", "spend_budget_usd", "expires_at"):
        cap = getattr(mine, field)
        value = body.get(field, cap)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if cap is not None and (value is None or (number and value > cap)):
            raise WiderThanCaller(field, f"must be at most {cap} (the calling key's)")
        out[field] = value
    return out


async def create_key(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    body = json_body(req, CREATE_FIELDS)
    kwargs = _bounded(api, caller, body)
    created = await service.create_key(api.store, caller.customer_id, org_id=caller.org_id,
                                       max_keys=MAX_KEYS, **kwargs)
    key = created.key
    await api.audit(caller, "key.create", key.id, key.customer_id, fields=sorted(body))
    # The only time the secret leaves Kraken: this answer, never a log, a row or a listing.
    return 201, {"key": key.as_dict(), "secret": created.plaintext}


async def revoke_key(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    json_body(req, ())
    key = await _key_to_change(api, caller, params["id"])
    key = await service.revoke_key(api.store, key.id, redis_url=api.redis_url)
    api.gateway.verifier.evict([key.id])  # refused by this process at once
    await api.audit(caller, "key.revoke", key.id, key.customer_id)
    return 200, key.as_dict()


async def delete_key(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    key = await _key_to_change(api, caller, params["id"])
    await service.delete_key(api.store, key.id, redis_url=api.redis_url)
    api.gateway.verifier.evict([key.id])
    await api.audit(caller, "key.delete", key.id, key.customer_id)
    return 200, {"id": key.id, "deleted": True}
