"""What every group of admin routes shares: its context, the audit helper, one route table.

A group is a small class whose handlers are methods; ``routes()`` lists them once as
(method, path, handler), in the order ``AdminApp`` tries them, and ``bind`` adds them.
"""
from __future__ import annotations

from typing import Any

from kraken import audit
from kraken.admin.context import AdminContext
from kraken.admin.errors import AdminError
from kraken.admin.server import AdminApp, AdminCall, Handler

Route = tuple[str, str, Handler]


class RouteGroup:
    """Handlers that read the context when called (never a copy taken at startup)."""

    def __init__(self, ctx: AdminContext):
        self.ctx = ctx
        self.store = ctx.store

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def bind(self, app: AdminApp) -> None:
        for method, path, handler in self.routes():
            app.add(method, path, handler)

    async def _audit(self, call: AdminCall, action: str, target: str | None,
                     subject: str | None, **detail: Any) -> None:
        """One audit record of a change by this call's actor: field names, never values."""
        await audit.record(self.store, actor=call.actor, action=action, target=target,
                           subject=subject, detail=detail)


def changes(call: AdminCall, fields: tuple[str, ...]) -> dict[str, Any]:
    """A PATCH body: only ``fields``, and at least one of them."""
    body = call.body(fields)
    if not body:
        raise AdminError("body: name at least one of " + ", ".join(fields), param="body")
    return body
