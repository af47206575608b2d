"""``/v1/files`` and ``/v1/batches``, passed through to the provider that holds them.

Every file and batch goes to one provider: the one a request names in ``x-kraken-provider``
(a configured provider of kind ``openai`` or ``openai_compatible``), else the first configured
provider of kind ``openai`` (else of kind ``openai_compatible``). Ids are therefore never
looked up: a client that names a provider names it on every call for the same ids. Clients
never choose a URL: the path is rebuilt from a checked id, the query from checked characters.

    POST /v1/files (multipart upload, streamed like audio; over ``max_file_bytes``: 413)   GET /v1/files
    GET /v1/files/{id}   GET /v1/files/{id}/content (streamed)   DELETE /v1/files/{id}
    POST /v1/batches   GET /v1/batches   GET /v1/batches/{id}   POST /v1/batches/{id}/cancel

Each call is one record (route ``files``/``batches``, no tokens), except a file's content: when
it holds a batch's results, their summed usage and half the model's price are recorded on that
call (``kraken.providers.openai_files``). Nothing of a file is stored or logged. Files and
batches are private to the customer that created them (``file_owners``).
"""
from __future__ import annotations

import re

from kraken.errors import MethodNotAllowed, NotFound
from kraken.gateway.body import json_object
from kraken.gateway.endpoint import Endpoint, Parsed
from kraken.gateway.endpoints.file_owners import guarded
from kraken.gateway.endpoints.owned_lists import PAGE
from kraken.gateway.upload import UPLOAD, Upload, UploadLimits
from kraken.http.exchange import Request
from kraken.policy.router import Route, Router
from kraken.providers.family import UpstreamRequest
from kraken.providers.openai_files import files_request

KINDS = ("openai", "openai_compatible")
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_QUERY = re.compile(r"[A-Za-z0-9_.=&%-]{0,512}")
_ROUTES = {  # (collection, method, what follows the id) -> answered
    ("files", "POST", None), ("files", "GET", None), ("files", "GET", ""),
    ("files", "GET", "/content"), ("files", "DELETE", ""),
    ("batches", "POST", None), ("batches", "GET", None), ("batches", "GET", ""),
    ("batches", "POST", "/cancel"),
}


def locate(req: Request) -> tuple[str, str | None, str]:
    """(collection, id or None, rest) of a path this module answers, else 404/405."""
    parts = req.path.split("/", 4)  # "", "v1", collection, id, rest
    collection = parts[2]
    file_id = parts[3] if len(parts) > 3 else None
    rest = "/" + parts[4] if len(parts) > 4 else ("" if file_id is not None else None)
    if file_id is not None and _ID.fullmatch(file_id) is None:
        raise NotFound(f"Unknown path {req.path[:100]}")
    if (collection, req.method, rest) not in _ROUTES:
        if any(c == collection and r == rest for c, _, r in _ROUTES):
            allowed = sorted(m for c, m, r in _ROUTES if c == collection and r == rest)
            raise MethodNotAllowed(f"Use {' or '.join(allowed)} for {req.path[:100]}",
                                   allow=", ".join(allowed))
        raise NotFound(f"Unknown path {req.path[:100]}")
    return collection, file_id, rest or ""


async def read(req: Request, limits: UploadLimits) -> dict:
    if req.method != "POST":
        return {}
    if req.path == "/v1/files":
        upload = await Upload.open(req, limits.file, b"purpose")
        return {UPLOAD: upload}
    return json_object(req.body) if req.body else {}


def holder(router: Router, parsed: Parsed) -> tuple[Route, ...]:
    """The one provider holding files and batches (module doc)."""
    named = parsed.req.header(b"x-kraken-provider")
    candidates = [p for p in router.providers if p.family.cfg.kind in KINDS]
    if named is not None:
        found = [p for p in candidates if p.name.encode() == named]
        if not found:
            raise NotFound("x-kraken-provider names no provider that holds files here")
        return (Route(found[0], ""),)
    for kind in KINDS:
        for provider in candidates:
            if provider.family.cfg.kind == kind:
                return (Route(provider, ""),)
    raise NotFound("No provider serves files and batches here")


def shape(route: Route, parsed: Parsed) -> UpstreamRequest:
    req = parsed.req
    collection, file_id, rest = parsed.where  # type: ignore[misc]
    query = parsed.payload.get(PAGE)  # a page of a list Kraken reads on (owned_lists)
    if query is None:
        query = req.target.partition("?")[2]
        if _QUERY.fullmatch(query) is None:
            query = ""
    path = f"/{collection}" + (f"/{file_id}{rest}" if file_id is not None else "")
    upload: Upload | None = parsed.payload.get(UPLOAD)
    if upload is not None:
        value = upload.field.value.decode()
        return files_request(route.provider.family, "POST", path, "", upload.first_bytes(value),
                             upload.headers(value))
    content = file_id if collection == "files" and rest == "/content" else None
    return files_request(route.provider.family, req.method, path, query,
                         req.body if req.method == "POST" else b"", None, content)


def _task(parsed: Parsed) -> str:
    return "other"


def _unused(body: bytes) -> dict:
    raise AssertionError("read, not parsed")


def _endpoint(path: str, route: str) -> Endpoint:
    return Endpoint(path=path, route=route, parse=_unused, read=read, task=_task, shape=shape,
                    method=None, locate=locate, routes=holder, around=guarded)


FILES = _endpoint("/v1/files", "files")
FILE = _endpoint("/v1/files/*", "files")
BATCHES = _endpoint("/v1/batches", "batches")
BATCH = _endpoint("/v1/batches/*", "batches")
