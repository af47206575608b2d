"""Rectifying one's own profile (``PATCH /v1/account``), and the link that confirms a new
email address:

    PATCH /v1/account               {"name": ...}  -> 200, changed at once
    PATCH /v1/account               {"email": ...} -> 202, the same whether or not it is taken
    GET  /v1/account/email/confirm  ?token=...     -> a page with one "confirm" button
    POST /v1/account/email/confirm  token=...      -> the address changed, once

A new address applies only once whoever reads its mail uses the link
(kraken/accounts/email_change.py): the caller's key alone may not set an address it does
not own, nor learn whether one has an account. Without mail ([email] ``from_address`` and
``base_url``) an email change is refused (503 ``email_change_unavailable``) and the confirm
route is absent; the operator still changes addresses through the admin API. The confirm
route takes no key (the mail's reader may hold none), as sign-up's does (link_pages.py).
"""
from __future__ import annotations

import html

import orjson

from kraken.accounts import email_change, service
from kraken.accounts import validation as v
from kraken.config.sections import EmailConfig
from kraken.errors import MethodNotAllowed
from kraken.gateway.endpoints.account import AccountApi, Answer, Caller, json_body
from kraken.gateway.endpoints.link_pages import (JSON_HEADERS, PAGE_HEADERS, confirm_page,
                                                 is_form, page, posted_token, query_token)
from kraken.http.exchange import Request, ResponseSink

PROFILE_FIELDS = ("email", "name")
CONFIRM = email_change.CONFIRM_PATH
_WHAT = "email change link"


async def patch_profile(api: AccountApi, caller: Caller, req: Request, params) -> Answer:
    """Rectification of one's own name (at once) and email (once confirmed: 202). Both are
    checked before either is done, so a refused request changes nothing."""
    body = json_body(req, PROFILE_FIELDS)
    if not body:
        raise service.ValidationError("body", "name at least one of email, name")
    if "email" in body:
        v.email(body["email"])
    if "name" in body:
        v.text(body["name"], "name")
    if "email" in body and api.email is None:
        raise email_change.EmailChangeUnavailable(
            "Changing your email address needs a confirmation email, and this server sends "
            "none; ask the operator to change it")
    if "email" in body:
        await email_change.request(api.store, api.email, caller.customer_id, body["email"])
        # The address is personal data: the entry names no address, nor whether it is taken.
        await api.audit(caller, "customer.email_change_request", caller.customer_id,
                        caller.customer_id)
    if "name" in body:
        cus = await service.update_customer(api.store, caller.customer_id, name=body["name"])
        await api.audit(caller, "customer.update", cus.id, cus.id, fields=["name"])
    cus = await service.get_customer(api.store, caller.customer_id)
    if "email" not in body:
        return 200, cus.as_dict()
    minutes = max(1, round(api.email.link_ttl_s / 60))
    return 202, {"object": "email_change", "status": "pending", "message": (
        "If the new address can receive email, a confirmation link is on its way to it. The "
        f"address changes only when that link is used, once, within {minutes} minutes."),
        "customer": cus.as_dict()}


class EmailConfirm:
    """``/v1/account/email/confirm``: the link's page and the change it confirms."""

    def __init__(self, store, cfg: EmailConfig) -> None:
        self.store = store
        self.cfg = cfg
        """The ``[email]`` settings: the old address is told of a confirmed change."""

    async def handle(self, req: Request, sink: ResponseSink) -> None:
        """GET: the confirmation page (uses nothing up). POST: change the address."""
        if req.method == "GET":
            token = email_change.check_token(query_token(req), _WHAT)
            if not await email_change.link_live(self.store, token):
                raise email_change.LinkGone(email_change.GONE_MESSAGE)
            sink.respond(200, PAGE_HEADERS, confirm_page(
                "Confirm your new email address",
                "Press the button to make this address your Kraken account's email address.",
                "Confirm the new address", CONFIRM, token))
            return
        if req.method != "POST":
            raise MethodNotAllowed(f"Use GET or POST for {CONFIRM}", allow="GET, POST")
        cus = await email_change.confirm(self.store, self.cfg, posted_token(req))
        if is_form(req):
            sink.respond(200, PAGE_HEADERS, changed_page(cus.email))
            return
        sink.respond(200, JSON_HEADERS, orjson.dumps({
            "object": "email_change", "status": "confirmed", "customer_id": cus.id,
            "email": cus.email}))




def changed_page(email: str) -> bytes:
    return page("Your email address is changed", (
        f"<p>Your Kraken account's email address is now <code>{html.escape(email)}</code>.</p>"))


def register(api: AccountApi, cfg: EmailConfig) -> EmailConfirm:
    """Let ``api``'s customers change their address by link (call only when ``cfg.sends_links``);
    the confirm route is an exact path, so it wins over the account API's ``/v1/account/*``."""
    api.email = cfg
    confirm = EmailConfirm(api.store, cfg)
    api.gateway.add_endpoint(CONFIRM, confirm.handle, None)
    return confirm
