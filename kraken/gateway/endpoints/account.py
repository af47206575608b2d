"""The self-service account API on the client listener (``/v1/account/...``), authenticated by
the caller's own Kraken key: no cookie, no admin token.

Plain endpoints (no call, no record): these answers call no provider, so their database I/O
stays off the metered path. Who may do what is the role table of kraken/accounts/roles.py,
checked once, in ``AccountApi.handle``, against the action each route names in ``routes()``.
An organisation key acts with its member's role in that organisation; a personal key (no
organisation) is its customer's own account, so it acts as that account's owner. A config-file
key has no account: 403. Anything outside the key's customer or organisation is answered 404,
as if it did not exist. Every change is audited with ``actor = "key:<key id>"``.

A change that affects another person waits for their consent: a new email address applies
once its owner uses the link mailed there (account_email.py), and a member added by an admin
is an invitation until the invitee accepts with their own key (account_invitations.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson

from kraken import audit
from kraken.accounts import service
from kraken.accounts.roles import ACTIONS, can, require
from kraken.billing import wallet
from kraken.errors import MethodNotAllowed, NotFound
from kraken.http.exchange import Request, ResponseSink
from kraken.policy.auth import Principal

if TYPE_CHECKING:
    from kraken.gateway.pipeline import Gateway

PREFIX = "/v1/account"
MAX_BODY = 64 * 1024


class NoAccount(service.ForbiddenError):
    """The key is not a database key of an account (a config-file key), or its customer is no
    longer a member of the key's organisation."""

    code = "no_account"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the calling key's row and the role it acts with."""

    principal: Principal
    key: service.ApiKey
    role: str

    @property
    def customer_id(self) -> str:
        return self.key.customer_id

    @property
    def org_id(self) -> str | None:
        return self.key.org_id

    @property
    def actor(self) -> str:
        return "key:" + self.key.id


Answer = tuple[int, Any]
"""(status, JSON payload), or (status, a ``Streamed``) for an answer the handler writes itself."""
RouteHandler = Callable[["AccountApi", Caller, Request, dict[str, str]], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class Streamed:
    """An answer too large to build in memory: ``send(sink)`` streams it (export)."""

    send: Callable[[ResponseSink], Awaitable[None]]


def json_body(req: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object holding only ``allowed`` fields (400 naming the first other one)."""
    if len(req.body) > MAX_BODY:
        raise service.ValidationError("body", f"larger than {MAX_BODY} bytes")
    if not req.body.strip():
        return {}
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        raise service.ValidationError("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise service.ValidationError("body", "must be a JSON object")
    for name in body:
        if name not in allowed:
            raise service.ValidationError(str(name)[:40], "unknown field")
    return body


class AccountApi:
    """The routes, the caller's identity and role, the one permission check."""

    def __init__(self, gateway: Gateway, store, *, redis_url: str | None = None):
        self.gateway = gateway
        self.store = store
        self.redis_url = redis_url
        self.stripe: Any = None
        """The ``[stripe]`` settings, for the top-up (set by ``register``)."""
        self.rights: dict[str, Any] = {}
        """Settings of the privacy-layer routes (kraken/privacy/account_rights.py)."""
        self.email: Any = None
        """The ``[email]`` settings once mail is set up (account_email.register): without
        them a customer cannot change their own address."""
        self.extra: list[CompiledRoute] = []
        """Routes served by higher layers (privacy: usage, export, erasure), added by the app."""

    def add_routes(self, table: list[tuple[str, str, str, RouteHandler]]) -> None:
        self.extra.extend(compile_route(*row) for row in table)

    async def handle(self, req: Request, sink: ResponseSink) -> None:
        handler, action, params = match(req.method, req.path, self.extra)
        caller = await self.caller(req)
        require(caller.role, action)  # the one permission check: 403 names the permission
        status, payload = await handler(self, caller, req, params)
        if isinstance(payload, Streamed):
            await payload.send(sink)
            return
        sink.respond(status, [(b"content-type", b"application/json"),
                              (b"cache-control", b"no-store")], orjson.dumps(payload))

    async def caller(self, req: Request) -> Caller:
        principal = await self.gateway.authenticate(req)
        try:
            key = await service.get_key(self.store, principal.key_id)
        except service.NotFoundError:
            key = None
        if key is None or key.customer_id != principal.customer_id:
            raise NoAccount("key", "this key belongs to no account (a config-file key)")
        if key.org_id is None:
            return Caller(principal, key, "owner")
        role = await service.member_role(self.store, key.org_id, key.customer_id)
        if role is None:
            raise NoAccount("key", "this key's customer is no longer a member of its organisation")
        return Caller(principal, key, role)

    async def audit(self, caller: Caller, action: str, target: str | None,
                    subject: str | None, **detail: Any) -> None:
        """One audit entry of a change by ``caller``: field names, never values."""
        await audit.record(self.store, actor=caller.actor, action=action, target=target,
                           subject=subject, detail=detail)

    def visible_org(self, caller: Caller, org_id: str) -> str:
        """``org_id`` if it is the calling key's organisation; anything else does not exist."""
        if caller.org_id is None or org_id != caller.org_id:
            raise service.NotFoundError("org_id", "no such organisation")
        return org_id


# ---- profile and wallet --------------------------------------------------------------------

async def show_profile(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """The caller's customer and key, with what the key's role may do (``permissions``: the
    roles.py actions, as ``handle`` checks them), so a client such as the portal shows only
    what it may use."""
    cus = await service.get_customer(api.store, caller.customer_id)
    permissions = [action for action in ACTIONS if can(caller.role, action)]
    return 200, {**cus.as_dict(), "key": {"id": caller.key.id, "org_id": caller.org_id,
                                          "role": caller.role}, "permissions": permissions}


async def show_wallet(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """The caller's customer's prepaid balance and its newest ledger entries."""
    micros = await wallet.balance(api.store, caller.customer_id)
    txs = await wallet.transactions(api.store, caller.customer_id, limit=100)
    return 200, {"customer_id": caller.customer_id, "balance_micros": micros,
                 "balance_usd": wallet.micros_to_usd(micros),
                 "transactions": [t.to_dict() for t in txs]}


# ---- the route table -----------------------------------------------------------------------

CompiledRoute = tuple[str, "re.Pattern[str]", str, RouteHandler]


def compile_route(method: str, path: str, action: str, handler: RouteHandler) -> CompiledRoute:
    return (method, re.compile(PREFIX + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]{1,64})", path)),
            action, handler)


@cache
def routes() -> list[CompiledRoute]:
    """The table, built on first use (the handler modules import this one)."""
    from kraken.gateway.endpoints import account_email as profile
    from kraken.gateway.endpoints import account_invitations as invited
    from kraken.gateway.endpoints import account_keys as keys
    from kraken.gateway.endpoints import account_members as members
    from kraken.gateway.endpoints import account_wallet as topup

    table = [
        # method, path under /v1/account, the roles.py action it needs, handler
        # Profile: every role has call_models, so every member may read and rectify their own.
        ("GET", "", "call_models", show_profile),
        ("PATCH", "", "call_models", profile.patch_profile),
        ("GET", "/keys", "manage_own_keys", keys.list_keys),
        ("POST", "/keys", "manage_own_keys", keys.create_key),
        ("DELETE", "/keys/{id}", "manage_own_keys", keys.delete_key),
        ("POST", "/keys/{id}/revoke", "manage_own_keys", keys.revoke_key),
        ("GET", "/organisations/{id}/members", "manage_members", members.list_members),
        ("POST", "/organisations/{id}/members", "manage_members", members.add_member),
        ("PATCH", "/organisations/{id}/members/{customer}", "manage_members", members.set_role),
        ("DELETE", "/organisations/{id}/members/{customer}", "manage_members",
         members.remove_member),
        ("GET", "/organisations/{id}/invitations", "manage_members", members.list_invitations),
        ("DELETE", "/organisations/{id}/invitations/{invitation}", "manage_members",
         members.revoke_invitation),
        # Invitations addressed to the caller's customer: theirs to answer, whatever the role.
        ("GET", "/invitations", "call_models", invited.list_mine),
        ("POST", "/invitations/{id}/accept", "call_models", invited.accept),
        ("POST", "/invitations/{id}/decline", "call_models", invited.decline),
        ("GET", "/wallet", "billing", show_wallet),
        ("POST", "/wallet/checkout", "billing", topup.checkout),
    ]
    return [compile_route(*row) for row in table]


def match(method: str, path: str, extra: list[CompiledRoute] = ()
          ) -> tuple[RouteHandler, str, dict[str, str]]:
    """The route for (method, path): 404 for an unknown path, 405 naming the methods it takes."""
    allow: list[str] = []
    for route_method, pattern, action, handler in [*routes(), *extra]:
        found = pattern.fullmatch(path)
        if found is None:
            continue
        if route_method == method:
            return handler, action, found.groupdict()
        allow.append(route_method)
    if allow:
        raise MethodNotAllowed(f"Use {', '.join(allow)} for {path[:100]}", allow=", ".join(allow))
    raise NotFound(f"Unknown path {path[:100]}")


def register(gateway: Gateway, store, *, redis_url: str | None = None,
             stripe: Any = None) -> AccountApi:
    """Serve the account API on ``gateway``'s listener, over ``store``."""
    api = AccountApi(gateway, store, redis_url=redis_url)
    api.stripe = stripe
    gateway.add_endpoint(PREFIX, api.handle, None)
    gateway.add_endpoint(PREFIX + "/*", api.handle, None)
    return api
