"""The admin handler with every route registered."""
from __future__ import annotations

from kraken.admin import page, routes_accounts, routes_keys, routes_privacy, routes_wallet
from kraken.admin.context import AdminContext
from kraken.admin.server import AdminApp


def build(ctx: AdminContext) -> AdminApp:
    app = AdminApp(ctx.cfg.admin.token_hash, max_body_bytes=ctx.cfg.admin.max_body_bytes)
    routes_accounts.register(app, ctx)
    routes_keys.register(app, ctx)
    routes_privacy.register(app, ctx)
    routes_wallet.register(app, ctx)
    page.register(app, ctx)  # GET /usage: the usage page and its data routes
    return app
