"""The invitations repository: organisations' pending invitations, one class for both backends
(kraken/accounts/invitations.py holds the rules).

A row is an offer of membership: the organisation, the invited customer id (which need not
exist: no foreign key, so an invitation never tells whether it does), the role, who invited
and when the offer lapses. Accepting or declining deletes the row (``take``), so an
invitation is used once even when both answers race. ``lock`` serialises invitations of one
organisation and of one invitee across PostgreSQL hosts (advisory locks for the
transaction), so the pending bounds hold; SQLite's single writer already does.

Reached as ``store.invitations`` / ``tx.invitations``; PostgreSQL's statements are these with
numbered placeholders (kraken/store/postgres/invitations.py).
"""
from __future__ import annotations

from typing import Mapping

INVITATION_COLS = ("i.id, i.org_id, o.name, i.customer_id, i.role, i.invited_by, i.created_at, "
                   "i.expires_at")
"""Columns of an invitation as listed, in order (``o.name``: the organisation's name)."""
_FROM = "FROM org_invitations i JOIN organisations o ON o.id = i.org_id"

STATEMENTS: dict[str, str] = {
    "lock": "",  # SQLite: the transaction's write lock is already the only one
    "insert": "INSERT INTO org_invitations (id, org_id, customer_id, role, invited_by, "
              "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "invitation": f"SELECT {INVITATION_COLS} {_FROM} WHERE i.id = ?",
    "of_org": f"SELECT {INVITATION_COLS} {_FROM} WHERE i.org_id = ? AND i.expires_at > ? "
              "ORDER BY i.created_at, i.id",
    "of_customer": f"SELECT {INVITATION_COLS} {_FROM} WHERE i.customer_id = ? "
                   "AND i.expires_at > ? ORDER BY i.created_at, i.id",
    "count_of_org": "SELECT COUNT(*) FROM org_invitations WHERE org_id = ? AND expires_at > ?",
    "count_of_customer": ("SELECT COUNT(*) FROM org_invitations WHERE customer_id = ? "
                          "AND expires_at > ?"),
    "invited": "SELECT 1 FROM org_invitations WHERE org_id = ? AND customer_id = ?",
    "take": ("DELETE FROM org_invitations WHERE id = ? AND customer_id = ? "
             "RETURNING org_id, role, expires_at"),
    "revoke": "DELETE FROM org_invitations WHERE id = ? AND org_id = ? RETURNING customer_id",
    "delete_involving": "DELETE FROM org_invitations WHERE customer_id = ? OR invited_by = ?",
    "revoke_sent_by": "DELETE FROM org_invitations WHERE org_id = ? AND invited_by = ?",
    "purge": "DELETE FROM org_invitations WHERE expires_at <= ?",
}
"""SQLite's spelling (``?`` placeholders)."""


class InvitationsRepository:
    """The statements of one backend; every method runs on ``db`` (a store or a transaction).
    Invitations come back as ``INVITATION_COLS`` tuples."""

    __slots__ = ("_sql",)

    def __init__(self, statements: Mapping[str, str]) -> None:
        self._sql = statements

    async def lock(self, db, org_id: str, customer_id: str) -> None:
        """Hold new invitations of the organisation and of the invitee until ``db`` (a
        transaction) ends; always in this order, so two holders never wait on each other."""
        if self._sql["lock"]:
            await db.execute(self._sql["lock"], ("invitations-org:" + org_id,))
            await db.execute(self._sql["lock"], ("invitations-customer:" + customer_id,))

    async def insert(self, db, invitation_id: str, org_id: str, customer_id: str, role: str,
                     invited_by: str, created_at: float, expires_at: float) -> None:
        await db.execute(self._sql["insert"], (invitation_id, org_id, customer_id, role,
                                               invited_by, created_at, expires_at))

    async def invitation(self, db, invitation_id: str) -> tuple | None:
        rows = await db.fetch_all(self._sql["invitation"], (invitation_id,))
        return rows[0] if rows else None

    async def of_org(self, db, org_id: str, now: float) -> list[tuple]:
        """The organisation's unexpired invitations, oldest first."""
        return await db.fetch_all(self._sql["of_org"], (org_id, now))

    async def of_customer(self, db, customer_id: str, now: float) -> list[tuple]:
        """The unexpired invitations addressed to ``customer_id``, oldest first."""
        return await db.fetch_all(self._sql["of_customer"], (customer_id, now))

    async def count_of_org(self, db, org_id: str, now: float) -> int:
        return int((await db.fetch_all(self._sql["count_of_org"], (org_id, now)))[0][0])

    async def count_of_customer(self, db, customer_id: str, now: float) -> int:
        return int((await db.fetch_all(self._sql["count_of_customer"],
                                       (customer_id, now)))[0][0])

    async def invited(self, db, org_id: str, customer_id: str) -> bool:
        """Has the organisation an invitation for ``customer_id`` (expired ones purged first)?"""
        return bool(await db.fetch_all(self._sql["invited"], (org_id, customer_id)))

    async def take(self, db, invitation_id: str, customer_id: str
                   ) -> tuple[str, str, float] | None:
        """Delete the invitation addressed to ``customer_id`` and return its (org_id, role,
        expires_at); None if there was none. The caller checks the expiry."""
        rows = await db.fetch_all(self._sql["take"], (invitation_id, customer_id))
        return (rows[0][0], rows[0][1], float(rows[0][2])) if rows else None

    async def revoke(self, db, invitation_id: str, org_id: str) -> str | None:
        """Delete the organisation's invitation; its invitee, or None if there was none."""
        rows = await db.fetch_all(self._sql["revoke"], (invitation_id, org_id))
        return rows[0][0] if rows else None

    async def delete_involving(self, db, customer_id: str) -> int:
        """Every invitation to or from ``customer_id`` (erasure); how many went."""
        return await db.execute(self._sql["delete_involving"], (customer_id, customer_id))

    async def revoke_sent_by(self, db, org_id: str, customer_id: str) -> int:
        """Every invitation ``customer_id`` sent on behalf of the organisation (it left, or
        may invite no more); how many went."""
        return await db.execute(self._sql["revoke_sent_by"], (org_id, customer_id))

    async def purge(self, db, now: float) -> int:
        """Delete every expired invitation; how many went."""
        return await db.execute(self._sql["purge"], (now,))


SQLITE_INVITATIONS = InvitationsRepository(STATEMENTS)
"""SQLite's invitations repository (``SqliteStore.invitations``)."""
