"""Admin routes for prepaid wallets (kraken/billing/wallet.py): balance, ledger, credits."""
from __future__ import annotations

from kraken.accounts import service
from kraken.admin import validate as val
from kraken.admin.context import AdminContext
from kraken.admin.errors import AdminError, conflict
from kraken.admin.route_group import Route, RouteGroup
from kraken.admin.server import AdminApp, AdminCall
from kraken.billing import wallet

_BIGGEST_ID = 2**63 - 1
"""The largest transaction id either database stores (a signed 64-bit integer)."""
_BODY_FIELDS = ("amount_usd", "ref", "kind")


def _wallet_error(exc: wallet.WalletError) -> AdminError:
    """``param`` is the body field a WalletError is about: the ledger says "amount" (in micros)
    where the body says amount_usd; other messages start with the field's name."""
    message = str(exc)
    first = message.split(" ", 1)[0]
    if "amount" in message.split():
        param: str | None = "amount_usd"
    else:
        param = first if first in _BODY_FIELDS else None
    if isinstance(exc, wallet.RefConflict):
        return conflict(message, param="ref")
    return AdminError(message, param=param)


class WalletRoutes(RouteGroup):
    """A customer's balance and ledger; credits (top-up, refund, adjustment) by reference."""

    def routes(self) -> list[Route]:
        return [
            ("GET", "/admin/customers/{id}/wallet", self.show),
            ("POST", "/admin/customers/{id}/wallet", self.credit),
        ]

    async def show(self, call: AdminCall):
        q = call.query(("limit", "before"))
        cus = await service.get_customer(self.store, call.params["id"])
        limit = q.get("limit") or "100"
        before = q.get("before") or None
        for name, raw in (("limit", limit), ("before", before)):
            if raw is not None and not (raw.isascii() and raw.isdigit()):
                raise val.invalid(name, "must be a non-negative integer")
        if not 1 <= int(limit) <= 1000:
            raise val.invalid("limit", "must be between 1 and 1000")
        if before is not None and int(before) > _BIGGEST_ID:  # the driver would overflow: 500
            raise val.invalid("before", f"must be a transaction id (at most {_BIGGEST_ID})")
        micros = await wallet.balance(self.store, cus.id)
        txs = await wallet.transactions(self.store, cus.id, limit=int(limit),
                                        before_id=int(before) if before else None)
        return 200, {"customer_id": cus.id, "balance_micros": micros,
                     "balance_usd": wallet.micros_to_usd(micros),
                     "transactions": [t.to_dict() for t in txs]}

    async def credit(self, call: AdminCall):
        body = call.body(("amount_usd", "ref", "kind"))
        kind = val.choice(val.text(body, "kind", max_len=20), "kind",
                          ("top_up", "refund", "adjustment"), "top_up")
        ref = val.text(body, "ref", required=True, max_len=255)
        if "amount_usd" not in body:
            raise val.invalid("amount_usd", "is required")
        if not isinstance(body["amount_usd"], (str, int, float)) or isinstance(body["amount_usd"], bool):
            raise val.invalid("amount_usd", "must be a number of USD")
        cus = await service.get_customer(self.store, call.params["id"])
        try:
            micros = wallet.usd_to_micros(body["amount_usd"])
            tx, new = await wallet.apply(self.store, cus.id, kind, micros, ref)
        except wallet.WalletError as exc:
            raise _wallet_error(exc) from None
        if self.ctx.billing is not None:  # else the customer gets 402 until the next refresh
            await self.ctx.billing.wallet_changed(self.store, cus.id)
        if new:
            await self._audit(call, f"wallet.{kind}", cus.id, cus.id, amount_micros=micros)
        return (201 if new else 200), tx.to_dict()


def register(app: AdminApp, ctx: AdminContext) -> None:
    WalletRoutes(ctx).bind(app)
