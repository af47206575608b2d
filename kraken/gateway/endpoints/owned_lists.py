"""A files or batches list holding only the caller's objects, paged as the provider pages it.

Every tenant's objects live in the operator's one provider account (``file_owners``), so the
provider's page of a list, filtered to the caller's objects, may hold fewer than ``limit`` of
them, even none while more follow; and the OpenAI SDKs' auto-pagination stops at an empty page
and asks for the next one with ``after=<the last object it got>``. A call therefore reads the
provider's pages itself, each after the last id of the one before, until it holds ``limit`` of
the caller's objects or the provider has no more (``OwnedPages.take``):

- the first page asks for ``limit`` objects, each next one for twice as many (up to the
  provider's maximum): a caller whose objects lie close together reads little more than it
  gets, one whose objects lie far apart soon reads whole pages;
- ``has_more`` is true only if more of the caller's objects may follow (the provider has more,
  or the rest of the last page read holds some); ``first_id`` and ``last_id`` are the answer's;
- the work per call is bounded: once it holds one of the caller's objects a call reads at most
  ``MAX_PAGES`` provider pages and keeps at most ``MAX_KEPT`` bytes of objects, then answers
  what it holds with ``has_more`` true. The SDK's next call goes on after the last object it
  got: nothing is skipped (pages past it that this call read are read again);
- holding none yet, it cannot stop: an empty page would end the SDK's listing with objects
  still to come. It reads on, to ``SEARCH_PAGES`` in all, then answers ``ListTooSparse`` (a
  503 the SDKs do not retry: the same call would read the same pages) rather than a wrong
  empty page;
- the client's ``after`` must name one of its own objects (``file_owners`` answers 404 for any
  other id, another tenant's or none: nothing tells them apart); its ``limit`` is checked
  against OpenAI's range for the collection (400); its other parameters (``order``,
  ``purpose``) go to the provider on every page as it gave them.

Pure: ``file_owners`` fetches the pages and reads their owners.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import orjson

from kraken.errors import BadRequest, InvalidValue, KrakenError

__all__ = ["PAGE", "ListQuery", "ListTooSparse", "OwnedPages"]

LIMITS = {"file": (10_000, 10_000), "batch": (20, 100)}
"""OpenAI's ``limit`` of each list, (default, maximum): files 1-10,000 (10,000 when not given),
batches 1-100 (20)."""
MAX_PAGES = 50
"""Provider pages one call reads once it holds one of the caller's objects."""
SEARCH_PAGES = 200
"""Provider pages one call reads while it holds none, before it answers ``ListTooSparse``."""
MAX_KEPT = 8 * 1024 * 1024
"""Bytes of the caller's objects one call keeps (``file_owners.MAX_HELD``: the answer made of
them is held whole too)."""
PAGE = object()
"""The ``Parsed.payload`` key of one provider page's query, which ``files.shape`` sends instead
of the client's: not a string, so no JSON body's key is it."""
_QUERY = re.compile(r"[A-Za-z0-9_.=&%-]{0,512}")  # as files.shape takes a client's query
_DIGITS = re.compile(r"[0-9]{1,6}")


class ListTooSparse(KrakenError):
    """No object of the caller's within ``SEARCH_PAGES`` provider pages (module doc)."""

    status = 503
    error_type = "server_error"
    code = "list_too_sparse"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"x-should-retry", b"false")]  # the OpenAI SDKs' own header, obeyed first


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What a client's list query asks for: ``limit``, ``after``, and the rest, as given."""

    limit: int
    maximum: int
    after: str | None
    rest: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, query: str, kind: str) -> ListQuery:
        """The query of a list of ``kind`` (``file``, ``batch``), or its 400."""
        if _QUERY.fullmatch(query) is None:
            raise BadRequest("A list's query may hold only letters, digits and '_.=&%-', "
                             "512 characters at most")
        limit, maximum = LIMITS[kind]
        after, rest = None, []
        for name, value in parse_qsl(query):
            if name == "limit":
                limit = int(value) if _DIGITS.fullmatch(value) else 0
                if not 1 <= limit <= maximum:
                    raise InvalidValue(f"Invalid 'limit': expected an integer between 1 and "
                                       f"{maximum}, got '{value[:20]}'", param="limit")
            elif name == "after":
                after = value
            else:
                rest.append((name, value))
        return cls(limit, maximum, after, tuple(rest))

    def upstream(self, after: str | None, size: int) -> str:
        """The provider's query for ``size`` objects after the object ``after``."""
        return urlencode([*self.rest, ("limit", size), *((("after", after),) if after else ())])


class OwnedPages:
    """One list call's reading of the provider's pages: the caller's objects kept so far
    (encoded), and where the provider's list goes on."""

    __slots__ = ("limit", "maximum", "size", "pages", "more", "_kept", "_held", "_first",
                 "_last", "_envelope")

    def __init__(self, query: ListQuery):
        self.limit, self.maximum = query.limit, query.maximum
        self.size = query.limit
        """How many objects the next provider page asks for."""
        self.pages = 0
        self.more = False
        self._kept: list[bytes] = []
        self._held = 0
        self._first = self._last = None  # the first and last kept objects' ids
        self._envelope: dict = {}

    @property
    def found(self) -> int:
        """How many of the caller's objects are kept."""
        return len(self._kept)

    def take(self, answer: dict, mine: set[str]) -> str | None:
        """Keep ``answer``'s objects that are ``mine`` (the caller's); the provider's id to
        read on after, or None: the answer is complete (``body``)."""
        self.pages += 1
        data = answer.get("data")
        answer["data"] = None  # the envelope, without the page's objects
        self._envelope = answer
        objects = data if isinstance(data, list) else []
        for obj in objects:
            oid = obj.get("id") if isinstance(obj, dict) else None
            if not isinstance(oid, str) or oid not in mine:
                continue
            if len(self._kept) == self.limit:  # one more of the caller's follows
                self.more = True
                return None
            raw = orjson.dumps(obj)
            if self._kept and self._held + len(raw) > MAX_KEPT:  # never an empty answer
                self.more = True
                return None
            self._kept.append(raw)
            self._held += len(raw)
            self._first = self._first or oid
            self._last = oid
        self.more = answer.get("has_more") is True
        last = next((i for o in reversed(objects) if isinstance(o, dict)
                     and isinstance(i := o.get("id"), str)), None)
        if last is None:  # nothing to read on after
            self.more = self.more and bool(self._kept)
        if not self.more or last is None or len(self._kept) == self.limit:
            return None
        if self._kept and self.pages >= MAX_PAGES:
            return None
        if self.pages >= SEARCH_PAGES:
            raise ListTooSparse(
                f"None of your objects lies within the provider list's next {self.pages} pages "
                "(more may follow): Kraken stopped reading it. Contact the operator.")
        self.size = min(self.maximum, self.size * 2)
        return last

    def body(self) -> bytes:
        """The answer: the provider's list envelope (its last page's) with the kept objects."""
        return orjson.dumps({**self._envelope, "data": [orjson.Fragment(o) for o in self._kept],
                             "first_id": self._first, "last_id": self._last,
                             "has_more": self.more})
