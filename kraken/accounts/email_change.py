"""Changing one's own email address: the change waits for the consent of the new address.

The address is where Kraken sends service messages and changes to its terms, so a key holder
may not simply set one they do not read. ``request`` (made with the customer's key) mails a
link to the new address; the address changes only when the link is used (``confirm``), by
whoever reads that mail. As with sign-up (signup.py), an address that already has an account
gets a notice instead of a link, and the caller's answer is the same either way: the answer
never tells whether an address has an account. The link's row is written either way (the
notice's token is never sent), so the per-customer bound (``MAX_PENDING``) counts both alike.

Only the token's SHA-256 is stored (``store.email_changes``), with the customer, the new
address and the expiry ([email] ``link_ttl_s``). If the mail server fails, the row is deleted
before the error goes back: no link that nobody received stays usable. ``confirm`` deletes the
link, checks the address is still free, changes it, drops the customer's other pending changes
and writes the audit entry, in one transaction: a link is used once, even when two
confirmations race. Once that has committed, the old address gets a notice (``changed_email``)
that names no address: if the change was an intruder's, the one who lost the account learns it
and whom to ask. That mail failing undoes nothing (one log line). Neither the token nor an
address is ever logged or audited.
"""
from __future__ import annotations

import math
import time

import anyio

from kraken import errors
from kraken.accounts import mailer
from kraken.accounts import validation as v
from kraken.accounts.links import check_token, mail_or_withdraw, new_token, token_hash
from kraken.accounts.service import Customer, get_customer
from kraken.audit.log import append as audit_append
from kraken.config.sections import EmailConfig
from kraken.store.errors import StoreError

CONFIRM_PATH = "/v1/account/email/confirm"
MAX_PENDING = 3
"""Live change links per customer: each request mails someone, so a key may not mail without
bound (a further request waits until the oldest link expires: 429)."""
ACTOR = "email-link"
"""The audit actor of a confirmed change: the holder of the new address's link."""


class EmailChangeUnavailable(errors.KrakenError):
    """The operator has set up no mail ([email] from_address, base_url): a customer cannot
    confirm a new address, so only the operator changes it (the admin API)."""

    status = 503
    error_type = "service_unavailable"
    code = "email_change_unavailable"
    param = "email"


class TooManyEmailChanges(errors.RateLimited):
    """``MAX_PENDING`` links of this customer are still live."""

    code = "too_many_email_changes"


class LinkGone(errors.KrakenError):
    """The link was already used, has expired, or was never issued: 410."""

    status = 410
    error_type = "invalid_request_error"
    code = "email_change_link_gone"
    param = "token"


GONE_MESSAGE = "This email change link was already used or has expired; ask for a new one"


def link_email(cfg: EmailConfig, token: str) -> tuple[str, str]:
    """(subject, text) of the email carrying the link."""
    minutes = max(1, round(cfg.link_ttl_s / 60))
    return ("Confirm your new Kraken email address", (
        "Someone (hopefully you) asked to make this the email address of a Kraken account. "
        "Kraken sends that account's service messages and changes to its terms here.\n\n"
        f"Open this link within {minutes} minutes and confirm to make the change:\n\n"
        f"{cfg.base_url}{CONFIRM_PATH}?token={token}\n\n"
        "The link works once. If you did not ask for it, ignore this email: nothing "
        "changes.\n"))


def taken_email() -> tuple[str, str]:
    """(subject, text) sent instead of a link when the address already has an account."""
    return ("Your Kraken email change request", (
        "Someone (hopefully you) asked to make this the email address of a Kraken account, "
        "but this address already belongs to a Kraken account, so nothing was changed.\n\n"
        "If you did not ask for this, ignore this email.\n"))


def changed_email() -> tuple[str, str]:
    """(subject, text) of the notice to the old address once the change is done: it never
    names the new address (an intruder's, perhaps, and the old mailbox may be shared)."""
    return ("Your Kraken account's email address was changed", (
        "Your Kraken account's email address was changed to another address. Kraken sends "
        "that account's service messages and changes to its terms there from now on, no "
        "longer here.\n\n"
        "If this was not you, contact the operator of this Kraken service.\n"))


async def request(store, cfg: EmailConfig, customer_id: str, email: object) -> None:
    """Mail a confirmation link for ``email`` (or the already-an-account notice); the answer
    and the stored state are the same whether or not the address is taken. MailUnavailable
    if the server cannot take the message, and then no link stays usable."""
    email = v.email(email)
    now = time.time()
    token = new_token()
    digest = token_hash(token)
    async with store.transaction() as tx:
        await tx.email_changes.lock(tx, customer_id)
        await tx.email_changes.purge(tx, now)
        row = await tx.accounts.customer(tx, customer_id)
        if row is None:
            raise v.NotFoundError("customer_id", "no such customer")
        if row[1].lower() == email.lower():
            raise v.ValidationError("email", "is already this account's address")
        pending = await tx.email_changes.pending(tx, customer_id, now)
        if len(pending) >= MAX_PENDING:
            raise TooManyEmailChanges(
                f"{MAX_PENDING} email change links are still waiting; retry once one expires",
                retry_after_s=max(1, math.ceil(pending[0] - now)), limit=MAX_PENDING)
        taken = await tx.accounts.email_taken(tx, email, other_than=customer_id)
        await tx.email_changes.insert(tx, digest, customer_id, email, now, now + cfg.link_ttl_s)
    await mail_or_withdraw(store, cfg, email, taken_email() if taken else link_email(cfg, token),
                           lambda tx: tx.email_changes.delete(tx, digest))


async def link_live(store, token: object) -> bool:
    """Does the link still work (nothing is used up; expired links are purged)?"""
    digest = token_hash(check_token(token, "email change link"))
    now = time.time()
    async with store.transaction() as tx:
        await tx.email_changes.purge(tx, now)
    return await store.email_changes.live(store, digest, now)


async def confirm(store, cfg: EmailConfig, token: object) -> Customer:
    """Use the link: the customer with its new address, audited, and the old address told;
    LinkGone if the link is used, expired or unknown; ConflictError if the address got an
    account since the request."""
    digest = token_hash(check_token(token, "email change link"))
    try:
        async with store.transaction() as tx:
            outcome, customer_id, old_email = await _apply_in(tx, digest)
    except StoreError as exc:  # the address taken meanwhile on another host (PostgreSQL)
        if store.accounts.is_duplicate(exc):
            raise v.ConflictError("email", "this address already has an account; nothing "
                                           "was changed") from None
        raise
    if outcome == "gone":
        raise LinkGone(GONE_MESSAGE)
    if outcome == "taken":
        raise v.ConflictError("email", "this address already has an account; nothing was "
                                       "changed")
    # The change stands: its notice goes out even if the confirming client hung up.
    with anyio.CancelScope(shield=True):
        await mailer.notify(cfg, old_email, *changed_email(),
                            what="email change notice to the previous address")
    return await get_customer(store, customer_id)


async def _apply_in(tx, digest: str) -> tuple[str, str, str]:
    """Inside one transaction: delete the link, then change the address; ("changed" | "gone"
    | "taken", the customer id, the address it had). "gone" and "taken" still commit: the
    link is used up."""
    link = await tx.email_changes.consume(tx, digest)
    if link is None or link[2] <= time.time():
        return "gone", "", ""
    customer_id, email = link[0], link[1]
    if await tx.accounts.email_taken(tx, email, other_than=customer_id):
        return "taken", customer_id, ""
    row = await tx.accounts.customer(tx, customer_id)
    if row is None:  # erased meanwhile (its links go with it; a race between the two)
        return "gone", "", ""
    await tx.accounts.update_customer(tx, customer_id, {"email": email})
    await tx.email_changes.delete_of_customer(tx, customer_id)  # older requests are moot
    await audit_append(tx, actor=ACTOR, action="customer.email_change", target=customer_id,
                       subject=customer_id, detail={"fields": ["email"]})
    return "changed", customer_id, row[1]
