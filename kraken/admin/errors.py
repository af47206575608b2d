"""Admin API errors: OpenAI-style JSON bodies that name the offending field in ``param``.

One class per answer: status and code are class attributes, the message and the field at
fault are the instance's. The body is OpenAI's (``kraken.errors.error_body``); an account
error's ``param`` is its ``field``.
"""
from __future__ import annotations

from kraken.errors import KrakenError


class AdminError(KrakenError):
    """A refused admin request (400 by default) that also names the request field at fault."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_value"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


class AdminUnauthorized(AdminError):
    status = 401
    code = "invalid_admin_token"


class CredentialRequired(AdminError):
    """The usage page takes a Kraken API key or the admin token; neither was valid."""

    status = 401
    code = "invalid_credential"


class AdminForbidden(AdminError):
    status = 403
    code = "forbidden"


class AdminNotFound(AdminError):
    status = 404
    code = "not_found"


class AdminMethodNotAllowed(AdminError):
    """A known admin path asked with another method: ``allow`` lists the ones it takes."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str):
        super().__init__(message)
        self.allow = allow

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow.encode())]


class AdminConflict(AdminError):
    status = 409
    code = "conflict"


class ByokNotConfigured(AdminConflict):
    """BYOK routes need a master key; none is configured."""

    code = "byok_not_configured"


class AdminInternalError(AdminError):
    status = 500
    error_type = "server_error"
    code = "internal_error"


def invalid(param: str, message: str) -> AdminError:
    return AdminError(f"{param}: {message}", param=param)


def not_found(what: str, param: str | None = None) -> AdminError:
    return AdminNotFound(f"{what} not found", param=param)


def conflict(message: str, param: str | None = None) -> AdminError:
    return AdminConflict(message, param=param)


def unauthorized() -> AdminError:
    """The one 401 for a missing, malformed or wrong token (nothing echoed). A new instance
    each time: re-raising one shared exception would grow its traceback forever."""
    return AdminUnauthorized("invalid admin token")
