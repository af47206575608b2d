"""Organisation roles and what each may do, written down as one table.

Restricted may call models only; Developer may also manage its own keys and read its own
usage; Admin manages members, every key, BYOK keys and limits; Owner also billing and deletion.
Owners are also the only ones to make, demote or remove an owner or change an owner's key (the
account API checks that, as it depends on the target: kraken/gateway/endpoints/account_*.py).
"""
from __future__ import annotations

from kraken.accounts.validation import ForbiddenError, ValidationError

ROLES = ("owner", "admin", "developer", "restricted")

ACTIONS = (
    "call_models",
    "manage_own_keys",
    "read_own_usage",
    "manage_members",
    "manage_keys",
    "manage_byok",
    "manage_limits",
    "read_usage",
    "billing",
    "delete_organisation",
)

_RESTRICTED = frozenset({"call_models"})
_DEVELOPER = _RESTRICTED | {"manage_own_keys", "read_own_usage"}
_ADMIN = _DEVELOPER | {"manage_members", "manage_keys", "manage_byok", "manage_limits",
                       "read_usage"}
_OWNER = _ADMIN | {"billing", "delete_organisation"}

PERMISSIONS: dict[str, frozenset[str]] = {
    "restricted": _RESTRICTED,
    "developer": _DEVELOPER,
    "admin": _ADMIN,
    "owner": _OWNER,
}


def role(value: object, field: str = "role") -> str:
    """A validated role name."""
    if not isinstance(value, str) or value not in PERMISSIONS:
        raise ValidationError(field, f"must be one of {', '.join(ROLES)}")
    return value


def can(role_name: str | None, action: str) -> bool:
    """True if ``role_name`` may do ``action``. Unknown actions raise (a typo must not deny
    or allow silently); an unknown or missing role may do nothing."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return action in PERMISSIONS.get(role_name or "", frozenset())


def require(role_name: str | None, action: str) -> None:
    """Raise ForbiddenError (403), naming the missing permission, unless ``role_name`` may
    do ``action``."""
    if not can(role_name, action):
        raise ForbiddenError("role", f"the role {role_name or 'none'!s} lacks the permission "
                                     f"'{action}'")
