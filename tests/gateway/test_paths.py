"""The path table: exact and prefix paths, and the method check in front of a handler."""
from __future__ import annotations

import pytest

from kraken.errors import MethodNotAllowed, NotFound
from kraken.gateway.paths import Paths
from kraken.http.exchange import Request

pytestmark = pytest.mark.anyio


def request(method: str, path: str) -> Request:
    return Request(method, path, (), b"", "127.0.0.1", 0)


async def served(req: Request, sink) -> str:
    return f"{req.method} {req.path}"


async def test_a_method_checked_path_runs_the_handlers_own_coroutine():
    """The check is a plain call: no wrapper coroutine frame is held while a call streams
    (~270 B per open stream)."""
    paths = Paths()
    paths.add("/v1/x", served, "POST")
    call = paths.handler_for("/v1/x")(request("POST", "/v1/x"), None)
    assert call.cr_code is served.__code__
    assert await call == "POST /v1/x"


async def test_a_wrong_method_is_refused_before_the_handler_runs_and_says_what_is_allowed():
    paths = Paths()
    paths.add("/v1/models", served, "GET")
    with pytest.raises(MethodNotAllowed) as refused:
        paths.handler_for("/v1/models")(request("DELETE", "/v1/models"), None)
    assert refused.value.allow == "GET, HEAD"
    assert await paths.handler_for("/v1/models")(request("HEAD", "/v1/models"), None)


async def test_prefixes_match_longest_first_and_unknown_paths_are_404():
    paths = Paths()
    paths.add("/v1/*", served, None)
    paths.add("/v1/models/*", served, "GET")
    with pytest.raises(MethodNotAllowed):
        paths.handler_for("/v1/models/m")(request("POST", "/v1/models/m"), None)
    assert await paths.handler_for("/v1/other")(request("POST", "/v1/other"), None)
    with pytest.raises(NotFound):
        paths.handler_for("/elsewhere")
