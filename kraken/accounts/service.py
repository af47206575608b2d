"""Accounts: customers, organisations and members, over the store's accounts repository.

The one place the admin API (kraken/admin), the CLI and GDPR code change accounts. Every
input is validated (``ValidationError`` names the field); the statements (always
parameterised, one set per backend) are ``store.accounts`` (kraken/store/accounts_sql.py), and
text is stored exactly as given after trimming. Key functions live in ``apikeys`` and are
re-exported here, so callers need only ``from kraken.accounts import service``.

Deleting a customer cascades (foreign keys) to its keys and memberships; triggers write a
``key_events`` row per key, which every Kraken process picks up within 1 s (revocation.py).
"""
from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

from kraken.accounts import validation as v
from kraken.accounts.apikeys import (  # noqa: F401  (re-exported API)
    ApiKey, CreatedKey, TooManyKeys, create_key, delete_key, get_key, list_keys, revoke_key,
    update_key,
)
from kraken.accounts.roles import ACTIONS, ROLES, can, require  # noqa: F401
from kraken.accounts.roles import role as _role
from kraken.accounts.validation import (  # noqa: F401
    AccountError, ConflictError, ForbiddenError, NotFoundError, ValidationError,
)
from kraken.store.errors import StoreError

UNSET: Any = object()
"""Default of ``update_*`` arguments: leave the field as it is."""
MAX_MEMBERS = 1000
"""Members one organisation may have: its member list (admin API, account API, portal) stays
one bounded answer."""


class TooManyMembers(ConflictError):
    """The organisation already has ``MAX_MEMBERS`` members: 409."""

    code = "too_many_members"


def too_many_members(field: str) -> TooManyMembers:
    return TooManyMembers(field, f"the organisation already has {MAX_MEMBERS} members, the "
                                 "most it may have")


async def room_for_member_in(tx, org_id: str, field: str = "customer_id") -> None:
    """Inside the transaction that adds a member: TooManyMembers (naming ``field``) if the
    organisation is full. The count holds until the transaction ends (``accounts.lock``):
    hosts adding to one organisation at once take turns, so the cap is exact."""
    await tx.accounts.lock(tx, "members-org:" + org_id)
    if await tx.accounts.member_count(tx, org_id) >= MAX_MEMBERS:
        raise too_many_members(field)


def new_id(prefix: str) -> str:
    """``<prefix>_<26 lowercase base32 chars>`` (130 random bits)."""
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{raw}"


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    email: str
    name: str | None
    plan: str
    opted_out: bool
    """Right to object: this customer's metadata is left out of routing statistics."""
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "name": self.name, "plan": self.plan,
                "opted_out": self.opted_out, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Organisation:
    id: str
    name: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class Member:
    org_id: str
    customer_id: str
    role: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"org_id": self.org_id, "customer_id": self.customer_id, "role": self.role,
                "created_at": self.created_at}


def _customer(row: tuple) -> Customer:
    return Customer(row[0], row[1], row[2], row[3], bool(row[4]), row[5])


def _is_unique_email(store, exc: StoreError) -> bool:
    # Email is the one UNIQUE column a customer write can break (ids are random). On SQLite,
    # BEGIN IMMEDIATE plus the pre-check make even that unreachable; on PostgreSQL two hosts
    # may race past the pre-check, and the unique index on lower(email) refuses the second.
    return store.accounts.is_duplicate(exc)


# -- customers ---------------------------------------------------------------------------------

async def create_customer(store, email: str, name: str | None = None, *, plan: str = "default",
                          opted_out: bool = False) -> Customer:
    """A new customer. ``email`` is required, validated, normalised and unique
    (case-insensitive): a taken address raises ConflictError naming ``email``."""
    email = v.email(email)
    name = v.text(name, "name")
    plan = v.plan(plan)
    opted_out = v.flag(opted_out, "opted_out")
    cus = Customer(new_id("cus"), email, name, plan, opted_out, time.time())
    try:
        async with store.transaction() as tx:
            if await tx.accounts.email_taken(tx, email):
                raise ConflictError("email", "is already used by another customer")
            await tx.accounts.insert_customer(tx, cus.id, cus.email, cus.name, cus.plan,
                                              cus.opted_out, cus.created_at)
    except StoreError as exc:  # a concurrent insert of the same address
        if _is_unique_email(store, exc):
            raise ConflictError("email", "is already used by another customer") from None
        raise
    return cus


async def get_customer(store, customer_id: str) -> Customer:
    """The customer, or NotFoundError naming ``customer_id``."""
    customer_id = v.identifier(customer_id, "customer_id")
    row = await store.accounts.customer(store, customer_id)
    if row is None:
        raise NotFoundError("customer_id", "no such customer")
    return _customer(row)


async def find_customer_by_email(store, email: str) -> Customer | None:
    """The customer with this address (case-insensitive), or None."""
    email = v.email(email)
    row = await store.accounts.customer_by_email(store, email)
    return _customer(row) if row else None


async def list_customers(store, *, limit: int = 100, after: str | None = None) -> list[Customer]:
    """Customers ordered by id; page with ``after`` = the last id of the previous page."""
    limit = v.count(limit, "limit")
    if not 1 <= limit <= 10_000:
        raise ValidationError("limit", "must be between 1 and 10000")
    rows = await store.accounts.customers_after(store, after or "", limit)
    return [_customer(r) for r in rows]


async def update_customer(store, customer_id: str, *, email: Any = UNSET, name: Any = UNSET,
                          plan: Any = UNSET, opted_out: Any = UNSET) -> Customer:
    """Rectification: change any of email, name (None clears it), plan, opted_out.

    A changed plan or opt-out reaches the gateways' key caches within 1 s (trigger ->
    key_events)."""
    customer_id = v.identifier(customer_id, "customer_id")
    changes: dict[str, Any] = {}
    if email is not UNSET:
        changes["email"] = v.email(email)
    if name is not UNSET:
        changes["name"] = v.text(name, "name")
    if plan is not UNSET:
        changes["plan"] = v.plan(plan)
    if opted_out is not UNSET:
        changes["opted_out"] = v.flag(opted_out, "opted_out")
    try:
        async with store.transaction() as tx:
            accounts = tx.accounts
            row = await accounts.customer(tx, customer_id)
            if row is None:
                raise NotFoundError("customer_id", "no such customer")
            if "email" in changes and await accounts.email_taken(
                    tx, changes["email"], other_than=customer_id):
                raise ConflictError("email", "is already used by another customer")
            if changes:  # column names come from the fixed set above, never from input
                await accounts.update_customer(tx, customer_id, changes)
                row = await accounts.customer(tx, customer_id)
    except StoreError as exc:
        if _is_unique_email(store, exc):
            raise ConflictError("email", "is already used by another customer") from None
        raise
    return _customer(row)


async def delete_customer_in(tx, customer_id: str) -> bool:
    """Delete inside the caller's transaction (GDPR erase composes it with its own deletes).

    Cascades to api_keys, members and pending email changes; organisations left without any
    member are deleted too, and so is every invitation to or from the customer (the invitee's
    id has no foreign key: kraken/accounts/invitations.py). Returns False if there was no such
    customer."""
    customer_id = v.identifier(customer_id, "customer_id")
    await tx.invitations.delete_involving(tx, customer_id)
    return await tx.accounts.delete_customer(tx, customer_id)


async def delete_customer(store, customer_id: str) -> None:
    """Delete the customer, its keys and memberships (NotFoundError if there is none)."""
    async with store.transaction() as tx:
        if not await delete_customer_in(tx, customer_id):
            raise NotFoundError("customer_id", "no such customer")


# -- organisations and members -----------------------------------------------------------------

async def create_organisation(store, name: str, owner_id: str) -> Organisation:
    """A new organisation with ``owner_id`` (an existing customer) as its owner."""
    name = v.text(name, "name", required=True)
    owner_id = v.identifier(owner_id, "owner_id")
    org = Organisation(new_id("org"), name, time.time())
    async with store.transaction() as tx:
        if not await tx.accounts.customer_exists(tx, owner_id):
            raise NotFoundError("owner_id", "no such customer")
        await tx.accounts.insert_organisation(tx, org.id, org.name, org.created_at)
        await tx.accounts.insert_member(tx, org.id, owner_id, "owner", org.created_at)
    return org


async def get_organisation(store, org_id: str) -> Organisation:
    org_id = v.identifier(org_id, "org_id")
    row = await store.accounts.organisation(store, org_id)
    if row is None:
        raise NotFoundError("org_id", "no such organisation")
    return Organisation(*row)


async def list_organisations(store, *, customer_id: str | None = None, after: str | None = None,
                             limit: int | None = None) -> list[Organisation]:
    """All organisations, or those ``customer_id`` is a member of, by id; with ``limit``, a
    page of them after the id ``after``."""
    if customer_id is not None:
        customer_id = v.identifier(customer_id, "customer_id")
    rows = await store.accounts.organisations(store, customer_id, after=after or "", limit=limit)
    return [Organisation(*r) for r in rows]


async def rename_organisation(store, org_id: str, name: str) -> Organisation:
    org_id = v.identifier(org_id, "org_id")
    name = v.text(name, "name", required=True)
    async with store.transaction() as tx:
        if not await tx.accounts.rename_organisation(tx, org_id, name):
            raise NotFoundError("org_id", "no such organisation")
        row = await tx.accounts.organisation(tx, org_id)
    return Organisation(*row)


async def delete_organisation(store, org_id: str) -> None:
    """Delete the organisation, its memberships and the keys scoped to it."""
    org_id = v.identifier(org_id, "org_id")
    async with store.transaction() as tx:
        if not await tx.accounts.delete_organisation(tx, org_id):
            raise NotFoundError("org_id", "no such organisation")


async def add_member(store, org_id: str, customer_id: str, role: str) -> Member:
    """Add ``customer_id`` to the organisation (ConflictError if already a member)."""
    org_id = v.identifier(org_id, "org_id")
    customer_id = v.identifier(customer_id, "customer_id")
    role = _role(role)
    m = Member(org_id, customer_id, role, time.time())
    async with store.transaction() as tx:
        accounts = tx.accounts
        if not await accounts.organisation_exists(tx, org_id):
            raise NotFoundError("org_id", "no such organisation")
        if not await accounts.customer_exists(tx, customer_id):
            raise NotFoundError("customer_id", "no such customer")
        if await accounts.is_member(tx, org_id, customer_id):
            raise ConflictError("customer_id", "is already a member")
        await room_for_member_in(tx, org_id)
        await accounts.insert_member(tx, m.org_id, m.customer_id, m.role, m.created_at)
    return m


async def set_member_role(store, org_id: str, customer_id: str, role: str) -> Member:
    """Change a member's role; the last owner cannot be demoted. A member demoted below
    ``manage_members`` loses, in the same transaction, the invitations it sent: they carried
    an authority it no longer has (kraken/accounts/invitations.py)."""
    org_id = v.identifier(org_id, "org_id")
    customer_id = v.identifier(customer_id, "customer_id")
    role = _role(role)
    async with store.transaction() as tx:
        await tx.accounts.lock_organisation(tx, org_id)  # two demotions at once: one waits
        row = await tx.accounts.member(tx, org_id, customer_id)
        if row is None:
            raise NotFoundError("customer_id", "is not a member of this organisation")
        if row[0] == "owner" and role != "owner" and await tx.accounts.owners(tx, org_id) <= 1:
            raise ValidationError("role", "the last owner cannot be demoted")
        await tx.accounts.set_member_role(tx, org_id, customer_id, role)
        if not can(role, "manage_members"):
            await tx.invitations.revoke_sent_by(tx, org_id, customer_id)
    return Member(org_id, customer_id, role, row[1])


async def remove_member(store, org_id: str, customer_id: str, *,
                        redis_url: str | None = None) -> list[str]:
    """Remove a member (the last owner cannot be removed; delete the organisation instead).

    Its keys in the organisation are revoked with it: they acted with the role it no longer
    has. Every process refuses them within 1 s (key_events); returns their ids, for the
    caller's own key cache. So are the invitations it sent on the organisation's behalf, in
    the same transaction. Its personal keys and other organisations' are untouched."""
    org_id = v.identifier(org_id, "org_id")
    customer_id = v.identifier(customer_id, "customer_id")
    async with store.transaction() as tx:
        await tx.accounts.lock_organisation(tx, org_id)  # as in set_member_role
        row = await tx.accounts.member(tx, org_id, customer_id)
        if row is None:
            raise NotFoundError("customer_id", "is not a member of this organisation")
        if row[0] == "owner" and await tx.accounts.owners(tx, org_id) <= 1:
            raise ValidationError("customer_id", "the last owner cannot be removed")
        await tx.accounts.delete_member(tx, org_id, customer_id)
        await tx.invitations.revoke_sent_by(tx, org_id, customer_id)
        revoked = await tx.accounts.revoke_member_keys(tx, org_id, customer_id, time.time())
    if redis_url and revoked:
        from kraken.accounts.revocation import publish

        await publish(redis_url, revoked)
    return revoked


async def list_members(store, org_id: str, *, after: str | None = None,
                       limit: int | None = None) -> list[Member]:
    """Members, oldest first; with ``limit``, a page of them after the member ``after``
    (a customer id: ValidationError naming ``after`` if it is not a member any more)."""
    org_id = v.identifier(org_id, "org_id")
    position = None
    if after is not None:
        row = await store.accounts.member(store, org_id, v.identifier(after, "after"))
        if row is None:
            raise ValidationError("after", "is not a member of this organisation (removed "
                                           "since the previous page?)")
        position = (row[1], after)
    rows = await store.accounts.members(store, org_id, after=position, limit=limit)
    return [Member(*r) for r in rows]


async def member_role(store, org_id: str, customer_id: str) -> str | None:
    """The customer's role in the organisation, or None if not a member (feed it to ``can``)."""
    row = await store.accounts.member(
        store, v.identifier(org_id, "org_id"), v.identifier(customer_id, "customer_id"))
    return row[0] if row else None
