"""API key verification on the hot path: bcrypt only on a cache miss, off the event loop.

Keys are stored only as bcrypt hashes (cost 12, ~300 ms of CPU). A verified token is cached,
keyed by the SHA-256 digest of the token (never the token itself), for ``cache_ttl_s``; a wrong
secret for a known key id is cached negatively for ``negative_ttl_s``. Both caches are bounded
(insertion order + LRU refresh). Malformed tokens and unknown ids are refused without bcrypt.
Concurrent verifications of one uncached token share a single bcrypt run (single flight), which
runs in a bounded thread pool; when too many runs are queued the request gets a 503.

Every bad key - missing, malformed, unknown id, wrong secret, revoked - gets the same 401 with
the same message, which never contains the key, its id or a hash.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple

from kraken import errors
from kraken.config import AuthConfig, KeyConfig
from kraken.gateway.keys import KEY_ID_RE, MAX_KEY_LEN, check_key, parse_key
from kraken.metrics import AUTH_CACHE, AUTH_CACHE_SIZE, AUTH_FAILURES

INVALID_KEY_MESSAGE = (
    "Invalid or missing API key. Send a Kraken key as 'Authorization: Bearer <key>' "
    "or in the 'x-api-key' header."
)
"""The one message for every kind of bad key, so a caller learns nothing about which it was."""

PENDING_PER_THREAD = 64
"""Queued bcrypt runs allowed per pool thread before new cache misses are refused with 503."""

_HIT = AUTH_CACHE.labels("hit")
_MISS = AUTH_CACHE.labels("miss")
_NEGATIVE_HIT = AUTH_CACHE.labels("negative_hit")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an authenticated request acts for."""

    key_id: str
    customer_id: str
    rpm: int = 0
    tpm: int = 0
    max_concurrent: int = 0


class _Key(NamedTuple):
    hash: str
    principal: Principal


class _Entry(NamedTuple):
    """A cache entry: which key (and which of its hashes) the token was checked against."""

    key_id: str
    hash: str
    expires: float


def credential(authorization: bytes | None, x_api_key: bytes | None) -> bytes | None:
    """The raw token from ``Authorization: Bearer <t>`` (scheme case-insensitive) or ``x-api-key``.

    A Bearer credential wins over ``x-api-key`` (Anthropic SDK style); another scheme is ignored.
    """
    if authorization:
        scheme, _, rest = authorization.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            token = rest.strip()
            if token:
                return token
    if x_api_key:
        token = x_api_key.strip()
        if token:
            return token
    return None


def _unauthorized() -> errors.Unauthorized:
    AUTH_FAILURES.inc()
    return errors.Unauthorized(INVALID_KEY_MESSAGE)


class KeyVerifier:
    """Turns a presented token into a ``Principal`` or raises ``errors.Unauthorized``.

    ``checker`` (the bcrypt comparison) and ``clock`` are injection points for tests; the
    verifier is used from a single event loop.
    """

    def __init__(
        self,
        keys: Iterable[KeyConfig],
        cfg: AuthConfig,
        *,
        checker: Callable[[str, str], bool] = check_key,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int | None = None,
    ) -> None:
        self._cfg = cfg
        self._checker = checker
        self._clock = clock
        threads = max(1, cfg.bcrypt_threads)
        self._max_pending = max_pending if max_pending is not None else PENDING_PER_THREAD * threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kraken-bcrypt")
        self._keys: dict[str, _Key] = {}
        # digest of the presented token -> entry; OrderedDict so the oldest is evicted first.
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._negative: OrderedDict[bytes, _Entry] = OrderedDict()
        # (token digest, hash checked against) -> the running bcrypt comparison.
        self._inflight: dict[tuple[bytes, str], asyncio.Future[bool]] = {}
        self._closed = False
        self.replace_keys(keys)

    # -- key set -----------------------------------------------------------------------------

    def replace_keys(self, keys: Iterable[KeyConfig]) -> None:
        """Install a new key set (config reload).

        Cache entries survive only for keys still present with the same hash; they pick up a
        changed customer or rpm at once because the Principal is read from the key set.
        """
        new: dict[str, _Key] = {}
        for k in keys:
            if KEY_ID_RE.fullmatch(k.id) is None:
                raise ValueError(f"key id {k.id!r} must match [a-z0-9]{{1,32}}")
            if k.id in new:
                raise ValueError(f"duplicate key id {k.id!r}")
            new[k.id] = _Key(k.hash, Principal(k.id, k.customer_id, k.rpm, k.tpm, k.max_concurrent))
        self._keys = new
        self._drop(lambda e: (cur := new.get(e.key_id)) is None or cur.hash != e.hash)

    def revoke(self, key_id: str) -> None:
        """Forget ``key_id`` now, including every cached verification of it."""
        self._keys.pop(key_id, None)
        self._drop(lambda e: e.key_id == key_id)

    def _drop(self, stale: Callable[[_Entry], bool]) -> None:
        # O(cache size), but only on reload or revocation, never per request.
        for cache in (self._cache, self._negative):
            for digest in [d for d, e in cache.items() if stale(e)]:
                del cache[digest]
        self._update_size()

    def _update_size(self) -> None:
        AUTH_CACHE_SIZE.set(len(self._cache) + len(self._negative))

    def close(self) -> None:
        """Shut down the bcrypt pool; later cache misses are refused with 503."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- hot path ----------------------------------------------------------------------------

    def _current(self, entry: _Entry) -> Principal | None:
        # The entry is only valid while its key is present with the hash it was checked against;
        # that makes revoke() and replace_keys() effective immediately, whatever the cache holds.
        key = self._keys.get(entry.key_id)
        if key is None or key.hash != entry.hash:
            return None
        return key.principal

    def lookup_cached(self, token: bytes) -> Principal | None:
        """A Principal if ``token`` was verified within the TTL, else None. Sync and O(1)."""
        return self._lookup(hashlib.sha256(token).digest())

    def _lookup(self, digest: bytes) -> Principal | None:
        # A dict lookup by SHA-256 digest: the token is never compared byte by byte, so
        # there is no secret-dependent comparison to hand to hmac.compare_digest.
        entry = self._cache.get(digest)
        if entry is None:
            return None
        principal = self._current(entry) if entry.expires > self._clock() else None
        if principal is None:
            del self._cache[digest]
            self._update_size()
            return None
        self._cache.move_to_end(digest)
        _HIT.inc()
        return principal

    async def verify(self, token: bytes | None) -> Principal:
        """The Principal for ``token`` (already stripped of "Bearer "), or raise Unauthorized.

        Raises ``errors.Overloaded`` (503) when the bcrypt queue is full or the pool is closed.
        """
        if not token or len(token) > MAX_KEY_LEN:
            raise _unauthorized()
        digest = hashlib.sha256(token).digest()
        principal = self._lookup(digest)
        if principal is not None:
            return principal
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            raise _unauthorized() from None
        parsed = parse_key(text)
        if parsed is None:
            raise _unauthorized()
        key_id = parsed[0]
        key = self._keys.get(key_id)
        if key is None:
            # Unknown ids are refused without bcrypt; key ids are not secrets.
            raise _unauthorized()

        neg = self._negative.get(digest)
        if neg is not None:
            if neg.expires > self._clock() and neg.hash == key.hash:
                _NEGATIVE_HIT.inc()
                raise _unauthorized()
            del self._negative[digest]
            self._update_size()

        _MISS.inc()
        ok = await asyncio.shield(self._check(digest, text, key_id, key.hash))
        if ok:
            current = self._keys.get(key_id)
            if current is not None and current.hash == key.hash:  # not revoked meanwhile
                return current.principal
        raise _unauthorized()

    def _check(self, digest: bytes, text: str, key_id: str, hashed: str) -> asyncio.Future[bool]:
        """The one in-flight bcrypt run for ``digest``, started if there is none (single flight)."""
        # Keyed by the hash too: after a reload changed it, a run against the old hash must
        # not answer for the new one.
        flight = (digest, hashed)
        fut = self._inflight.get(flight)
        if fut is not None:
            return fut
        if self._closed or len(self._inflight) >= self._max_pending:
            raise errors.Overloaded("Authentication is overloaded; retry shortly.")
        loop = asyncio.get_running_loop()
        try:
            fut = loop.run_in_executor(self._pool, self._checker, text, hashed)
        except RuntimeError:  # pool shut down
            raise errors.Overloaded("Authentication is overloaded; retry shortly.") from None
        self._inflight[flight] = fut
        # Settle in a callback, not in the awaiting task: a waiter cancelled by a client
        # disconnect must not lose the result for the others (hence also the shield above).
        fut.add_done_callback(lambda f: self._settle(digest, key_id, hashed, f))
        return fut

    def _settle(self, digest: bytes, key_id: str, hashed: str, fut: asyncio.Future[bool]) -> None:
        self._inflight.pop((digest, hashed), None)
        if fut.cancelled() or fut.exception() is not None:
            return
        key = self._keys.get(key_id)
        if key is None or key.hash != hashed:
            return  # revoked or replaced while bcrypt ran: cache nothing
        if fut.result():
            cache, ttl = self._cache, self._cfg.cache_ttl_s
        else:
            cache, ttl = self._negative, self._cfg.negative_ttl_s
        if ttl <= 0 or self._cfg.cache_max <= 0:
            return
        cache[digest] = _Entry(key_id, hashed, self._clock() + ttl)
        cache.move_to_end(digest)
        while len(cache) > self._cfg.cache_max:
            cache.popitem(last=False)
        self._update_size()
