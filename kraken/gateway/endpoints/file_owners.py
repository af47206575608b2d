"""Files and batches are private to the customer that created them.

Every file and batch lives in one provider account, the operator's, so without this any key
holder could reach every other tenant's objects. ``guarded`` wraps the dispatch of the
``/v1/files`` and ``/v1/batches`` endpoints (``Endpoint.around``):

- a create answered 2xx (``POST /v1/files``, ``POST /v1/batches``) records the answer's ``id``
  as the caller's (``store.owners``), before the answer is sent: the next call may name it;
- a batch is created only from an ``input_file_id`` the caller owns;
- a call naming an id answers 404 (as if it did not exist) unless the caller owns it;
- a batch retrieved by its owner gives its ``output_file_id`` and ``error_file_id`` to the
  owner too (the provider made them for that batch), so the owner can download its results;
- a list holds only the caller's objects: the provider's pages, filtered, read on until they
  give ``limit`` of them (``owned_lists``: the bounds, ``has_more``, the client's ``after``,
  which must be its own). (Answering from the store would need each object's fields from the
  provider anyway.)

The answers that are read (creates, batch retrieves, lists) are held whole (small JSON
objects) and relayed byte for byte, except a list, re-encoded with the caller's objects. A
list that reads several provider pages is one call and one record, made as the first page
ends (its status and latency are that page's). Downloads stream as before. Each call reads the
store (and a create writes it): these endpoints are not on the chat/stream hot path, where no
call waits on the database.

With the customer's own provider key (BYOK) the account is the customer's: nothing is checked.
"""
from __future__ import annotations

import re
import time

import orjson

from kraken.errors import KrakenError, NotFound, UpstreamFailed, UpstreamStatus
from kraken.gateway.endpoint import Parsed
from kraken.gateway.endpoints.owned_lists import PAGE, ListQuery, OwnedPages
from kraken.http.exchange import ResponseSink, SinkWrapper

__all__ = ["guarded"]

KIND = {"files": "file", "batches": "batch"}
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_HELD = 8 * 1024 * 1024
"""A held answer larger than this is refused (502) rather than held: a files list page of
OpenAI's largest (10,000 objects of ~300 bytes) is ~3 MiB, and parsing the answer to filter
it takes several times its size again, per call in flight."""


class Unchecked(KrakenError):
    """A 2xx answer that could not be read (too large, not a JSON object): never relayed."""

    status = 502
    error_type = "upstream_error"


class HeldSink(SinkWrapper):
    """Holds one whole 2xx answer (the relay's only answers) until ``release``."""

    __slots__ = ("status", "headers", "body", "ended", "too_large", "_aborted")

    def __init__(self, sink: ResponseSink):
        super().__init__(sink)
        self.status, self.headers, self.body = 0, [], bytearray()
        self.ended = self.too_large = self._aborted = False

    def start(self, status: int, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self.status, self.headers = status, headers

    def write(self, data: bytes) -> None:
        if len(self.body) + len(data) > MAX_HELD:
            self.too_large = True  # refused once the relay is done (raised here, it would
            self.body.clear()  # be raised inside the connection's callback)
        elif not self.too_large:
            self.body += data

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.start(status, headers, len(body))
        self.write(body)
        self.end()

    def end(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self._aborted = True
        self._sink.abort()

    @property
    def started(self) -> bool:
        return bool(self.status) or self._sink.started

    def release(self, body: bytes | None = None) -> None:
        """The held answer to the client (``body`` instead of the held bytes, a list's)."""
        if self.ended and not self._aborted:
            self._sink.respond(self.status, self.headers,
                               bytes(self.body) if body is None else body)


async def guarded(gateway, call, endpoint, routes, parsed, sink, later=None) -> None:
    """``gateway.dispatch`` of one files/batches call, checked and recorded (module doc)."""
    store, route = gateway.owners, routes[0]
    if store is None or _own_account(call, route):
        return await gateway.dispatch(call, endpoint, routes, parsed, sink, later)
    collection, object_id, _ = parsed.where
    provider, kind, method = route.provider.name, KIND[collection], parsed.req.method
    owners, customer = store.owners, call.customer_id
    if method == "GET" and object_id is None:
        return await _list(gateway, call, endpoint, routes, parsed, sink, later)
    if object_id is not None:
        if await owners.owner(store, provider, kind, object_id) != customer:
            raise _not_found(kind, object_id)
        if not (kind == "batch" and method == "GET"):
            return await gateway.dispatch(call, endpoint, routes, parsed, sink, later)
    elif method == "POST" and kind == "batch":
        input_id = parsed.payload.get("input_file_id")
        if not isinstance(input_id, str) or await owners.owner(
                store, provider, "file", input_id) != customer:
            raise _not_found("file", str(input_id), "input_file_id")
    held = HeldSink(sink)
    await gateway.dispatch(call, endpoint, routes, parsed, held, later)
    if not held.ended or not 200 <= held.status < 300:
        return held.release()
    answer = None if held.too_large else _json(bytes(held.body))
    if answer is None:  # nothing to tap the id from
        raise Unchecked("The provider's answer could not be read")
    if method == "POST":
        claim, ids = kind, [answer.get("id")]
    else:  # a batch its owner retrieved: its results files are the owner's too
        claim, ids = "file", [answer.get("output_file_id"), answer.get("error_file_id")]
    ids = [i for i in ids if isinstance(i, str) and _ID.fullmatch(i)]
    if ids:
        async with store.transaction() as tx:
            await owners.claim(tx, provider, claim, ids, customer, time.time())
    held.release()


async def _list(gateway, call, endpoint, routes, parsed, sink, later) -> None:
    """A list of the caller's objects, read over as many of the provider's pages as it takes
    (``owned_lists``), each fetched as one dispatch of this call."""
    store, provider, customer = gateway.owners, routes[0].provider.name, call.customer_id
    kind = KIND[parsed.where[0]]
    query = ListQuery.parse(parsed.req.target.partition("?")[2], kind)
    after = query.after
    if after is not None and (_ID.fullmatch(after) is None or await store.owners.owner(
            store, provider, kind, after) != customer):
        raise _not_found(kind, after, "after")
    pages, done = OwnedPages(query), None
    while True:
        held = HeldSink(sink)
        page = Parsed(parsed.req, {PAGE: query.upstream(after, pages.size)}, parsed.where)
        try:
            await gateway.dispatch(call, endpoint, routes, page, held, later)
        except KrakenError as exc:
            if done is None:  # the first page: as any call's
                raise
            if pages.found:  # what it holds, and the SDK's next call goes on after it
                return done.release(pages.body())
            if isinstance(exc, UpstreamStatus):  # its body may name another tenant's id
                raise UpstreamFailed("The provider failed a page of the list") from None
            raise
        if not held.ended or not 200 <= held.status < 300:
            return held.release()
        answer = None if held.too_large else _json(bytes(held.body))
        if answer is None:  # a list that cannot be filtered
            raise Unchecked("The provider's answer could not be read")
        mine = await store.owners.owned(store, provider, kind, customer, _listed(answer))
        after, done = pages.take(answer, mine), held
        if after is None:
            return held.release(pages.body())


def _not_found(kind: str, object_id: str, param: str | None = None) -> NotFound:
    err = NotFound(f"No such {'File' if kind == 'file' else 'Batch'} object: {object_id[:128]}")
    err.param = param
    return err


def _own_account(call, route) -> bool:
    """Whether the call goes out with the customer's own key (``Gateway.authorize``)."""
    keys = call.byok_keys
    return (bool(keys) and keys.get(route.provider.family.cfg.kind) is not None
            and route.provider.family.authorized is not None)


def _json(body: bytes) -> dict | None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def _listed(answer: dict) -> list[str]:
    """The ids a list answer's ``data`` names (the only ones whose owner is read)."""
    data = answer.get("data")
    objects = data if isinstance(data, list) else []
    return [i for o in objects if isinstance(o, dict) and isinstance(i := o.get("id"), str)
            and _ID.fullmatch(i)]
