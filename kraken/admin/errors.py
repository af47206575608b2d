"""Admin API errors: OpenAI-style JSON bodies that name the offending field in ``param``."""
from __future__ import annotations

import orjson

from kraken.errors import KrakenError


class AdminError(KrakenError):
    """A KrakenError that also names the request field at fault."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_value",
                 param: str | None = None, allow: str | None = None):
        super().__init__(message, status=status, code=code)
        self.param = param
        self.allow = allow

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"allow", self.allow.encode())] if self.allow else []


def invalid(param: str, message: str) -> AdminError:
    return AdminError(f"{param}: {message}", param=param)


def not_found(what: str, param: str | None = None) -> AdminError:
    return AdminError(f"{what} not found", status=404, code="not_found", param=param)


def conflict(message: str, param: str | None = None) -> AdminError:
    return AdminError(message, status=409, code="conflict", param=param)


def unauthorized() -> AdminError:
    """The one 401 for a missing, malformed or wrong token (nothing echoed). A new instance
    each time: re-raising one shared exception would grow its traceback forever."""
    return AdminError("invalid admin token", status=401, code="invalid_admin_token")


def body_of(exc: KrakenError) -> bytes:
    param = getattr(exc, "param", None) or getattr(exc, "field", None)
    return orjson.dumps({"error": {"message": exc.message, "type": exc.error_type,
                                   "param": param, "code": exc.code}})
