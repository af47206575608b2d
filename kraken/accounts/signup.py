"""Self-service sign-up by one-time email link: the rules (issue 15).

``request_link`` mails a link holding a random token (256 bits); only the token's SHA-256 is
stored, with the address and the link's expiry (``store.signup``). An address that already
has an account gets a different email and no link, and the caller answers the same either
way, so the answer never tells whether an address has an account. If the mail server fails,
the link's row is deleted before the error goes back: no link that nobody received stays
usable.

``confirm`` turns a link into a customer and its first API key in one transaction that also
deletes the link and writes the audit entry: two concurrent confirmations of one link create
one account (the second finds no row to delete). An expired link is deleted by the attempt.
Neither the token, the address nor the key is ever logged or audited: the entry names the
new customer and key ids only.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import anyio

from kraken import errors
from kraken.accounts import mailer
from kraken.accounts import validation as v
from kraken.accounts.apikeys import ApiKey, CreatedKey
from kraken.accounts.keys import DEFAULT_ROUNDS, generate_checked_key, hash_key
from kraken.accounts.links import TOKEN_BYTES, mail_or_withdraw, token_hash
from kraken.accounts.links import check_token as _check_link_token
from kraken.accounts.service import Customer, new_id
from kraken.audit.log import append as audit_append
from kraken.config.sections import EmailConfig
from kraken.store.errors import StoreError

CONFIRM_PATH = "/v1/account/signup/confirm"
KEY_NAME = "signup"
ACTOR = "signup"


class LinkGone(errors.KrakenError):
    """The link was already used, has expired, or was never issued: 410."""

    status = 410
    error_type = "invalid_request_error"
    code = "signup_link_gone"
    param = "token"


@dataclass(frozen=True, slots=True)
class SignedUp:
    """``confirm``'s answer: ``key.plaintext`` is the only copy of the first key."""

    customer: Customer
    key: CreatedKey


def check_token(value: object) -> str:
    """A token as issued (43 URL-safe characters); anything else is a 400 naming ``token``."""
    return _check_link_token(value, "sign-up link")


def link_email(cfg: EmailConfig, token: str) -> tuple[str, str]:
    """(subject, text) of the email carrying the link."""
    minutes = max(1, round(cfg.link_ttl_s / 60))
    return ("Your Kraken sign-up link", (
        "Someone (hopefully you) asked to create a Kraken account for this address.\n\n"
        f"Open this link within {minutes} minutes and confirm to get your API key:\n\n"
        f"{cfg.base_url}{CONFIRM_PATH}?token={token}\n\n"
        "The link works once. If you did not ask for it, ignore this email.\n"))


def exists_email() -> tuple[str, str]:
    """(subject, text) sent instead of a link when the address already has an account."""
    return ("Your Kraken sign-up request", (
        "Someone (hopefully you) asked to create a Kraken account for this address, but it "
        "already has one, so no new account was made.\n\n"
        "Use one of your existing API keys, or ask your organisation's owner for one. If you "
        "did not ask for this, ignore this email.\n"))


async def request_link(store, cfg: EmailConfig, email: str) -> None:
    """Mail a sign-up link to ``email`` (or the already-an-account notice); MailUnavailable
    if the server cannot take it, and then no link stays usable."""
    email = v.email(email)
    now = time.time()
    async with store.transaction() as tx:
        await tx.signup.purge(tx, now)
        taken = await tx.accounts.email_taken(tx, email)
        if not taken:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            digest = token_hash(token)
            await tx.signup.insert(tx, digest, email, now, now + cfg.link_ttl_s)
    if taken:
        await mailer.send(cfg, email, *exists_email())
        return
    await mail_or_withdraw(store, cfg, email, link_email(cfg, token),
                           lambda tx: tx.signup.delete(tx, digest))


async def link_live(store, token: str) -> bool:
    """Does the link still work (nothing is used up; expired links are purged)?"""
    digest = token_hash(check_token(token))
    now = time.time()
    async with store.transaction() as tx:
        await tx.signup.purge(tx, now)
    return await store.signup.live(store, digest, now)


async def confirm(store, token: str, *, rounds: int = DEFAULT_ROUNDS) -> SignedUp:
    """Use the link: a new customer (default plan) and its first key, audited; LinkGone if
    the link is used, expired or unknown; ConflictError if the address got an account since."""
    digest = token_hash(check_token(token))
    if not await link_live(store, token):  # purges expired links, this one included
        raise LinkGone("This sign-up link was already used or has expired; ask for a new one")
    # bcrypt (~300 ms) before the transaction, and only for a link that exists.
    plaintext, key_id = generate_checked_key("live")
    hashed = await anyio.to_thread.run_sync(hash_key, plaintext, rounds)
    cus = Customer(new_id("cus"), "", None, "default", False, time.time())
    key = ApiKey(key_id, cus.id, None, KEY_NAME, cus.created_at, None, None, None, 0, 0, 0,
                 None, None)
    try:
        async with store.transaction() as tx:
            outcome, email = await _create_in(tx, digest, cus, key, hashed)
    except StoreError as exc:  # two links of one address confirmed at once (PostgreSQL)
        if store.accounts.is_duplicate(exc):
            raise v.ConflictError("email", "an account with this address already exists") \
                from None
        raise
    if outcome == "gone":
        raise LinkGone("This sign-up link was already used or has expired; ask for a new one")
    if outcome == "taken":
        raise v.ConflictError("email", "an account with this address already exists")
    return SignedUp(Customer(cus.id, email, None, cus.plan, False, cus.created_at),
                    CreatedKey(key, plaintext))


async def _create_in(tx, digest: str, cus: Customer, key: ApiKey,
                     hashed: str) -> tuple[str, str]:
    """Inside one transaction: delete the link, then create; ("created" | "gone" | "taken",
    email). "gone" and "taken" still commit, so the link is used up either way."""
    row = await tx.signup.consume(tx, digest)
    if row is None or row[1] <= time.time():
        return "gone", ""
    email = row[0]
    if await tx.accounts.email_taken(tx, email):
        return "taken", email
    await tx.accounts.insert_customer(tx, cus.id, email, None, cus.plan, False, cus.created_at)
    await tx.accounts.insert_key(tx, (key.id, cus.id, None, key.name, hashed, key.created_at,
                                      None, None, 0, 0, 0, None, None))
    await audit_append(tx, actor=ACTOR, action="customer.signup", target=cus.id,
                       subject=cus.id, detail={"key_id": key.id})
    return "created", email
