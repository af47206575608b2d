"""Which handler serves a path: exact paths, ``/prefix/*`` paths (longest first), the method
check (405 with ``Allow``), and the wire format of errors no endpoint answered."""
from __future__ import annotations

from typing import Awaitable, Callable

from kraken.errors import KrakenError, MethodNotAllowed, NotFound
from kraken.gateway.answers import transport_answer
from kraken.http.answers import Answer, Headers
from kraken.http.exchange import Request, ResponseSink
from kraken.providers.error_formats import OPENAI, ErrorFormat

__all__ = ["Handler", "Paths"]

Handler = Callable[[Request, ResponseSink], Awaitable[None]]
_ALLOW = {"GET": "GET, HEAD"}
"""The Allow header of a 405, by the method an endpoint serves (HEAD wherever GET)."""


class Paths:
    """The gateway's path table, filled once at startup."""

    def __init__(self) -> None:
        self.exact: dict[str, Handler] = {}
        self._prefixes: list[tuple[str, Handler]] = []
        """``/prefix/*`` handlers, longest prefix first."""
        self._error_formats: list[tuple[str, ErrorFormat]] = []
        """(path prefix, wire format) for errors no endpoint answered (404, 405, ...)."""

    def handler_for(self, path: str) -> Handler:
        handler = self.exact.get(path)
        if handler is not None:
            return handler
        for prefix, handler in self._prefixes:  # Gemini's models/{m}:{method}, /v1/models/{id}
            if path.startswith(prefix):
                return handler
        raise NotFound(f"Unknown path {path[:100]}")

    def error_format(self, path: str) -> ErrorFormat:
        """The wire format of an error under ``path`` that no endpoint answered."""
        return next((f for prefix, f in self._error_formats if path.startswith(prefix)), OPENAI)

    def error_answer(self, exc: KrakenError, path: str | None,
                     extra: Headers | None = None) -> Answer:
        """The transport's ``ErrorAnswers`` (``kraken.http.answers``): a refusal before any
        handler (413, 431, 408, ...), or an error one let escape, in ``path``'s wire format
        (OpenAI's when the head did not show a path)."""
        return transport_answer(OPENAI if path is None else self.error_format(path), exc, extra)

    def add_error_format(self, prefix: str, errors: ErrorFormat) -> None:
        """Errors under ``prefix`` that no endpoint answers are in the ``errors`` format."""
        self._error_formats.append((prefix, errors))

    def add(self, path: str, handler: Handler, method: str | None) -> None:
        """Route ``path`` to ``handler``, behind a method check when ``method`` is set."""
        if method is not None:
            allow = _ALLOW.get(method, method)
            methods = allow.split(", ")
            inner = handler

            def checked(req: Request, sink: ResponseSink) -> Awaitable[None]:
                if req.method not in methods:
                    raise MethodNotAllowed(f"Use {method} for {path}", allow=allow)
                return inner(req, sink)  # no frame of its own while the call lasts

            handler = checked
        if path.endswith("/*"):
            self._prefixes.append((path[:-1], handler))
            self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        else:
            self.exact[path] = handler
