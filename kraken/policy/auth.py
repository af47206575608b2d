"""API key verification on the hot path: bcrypt only on a cache miss, off the event loop.

Keys are stored only as bcrypt hashes (cost 12, ~300 ms of CPU). A verified token is cached,
keyed by the BLAKE2s digest of the token (never the token itself), for ``cache_ttl_s``; a wrong
secret for a known key id is cached negatively for ``negative_ttl_s``. Both caches are bounded
(insertion order + LRU refresh). Malformed tokens and unknown ids are refused without bcrypt.
Concurrent verifications of one uncached token share a single bcrypt run (single flight), which
runs in a bounded thread pool (kraken/policy/bcrypt_pool.py); when too many runs are queued the
request gets a 503. Given the request's client address (``verify(token, gate)``), a bcrypt run
holds one of that address's authentication attempts and every refusal counts as one failure of
that address, so one address can neither fill the pool nor outrun its failure limit.

Every bad key - missing, malformed, unknown id, wrong secret, revoked, expired - gets the same
401 with the same message, which never contains the key, its id or a hash.

Keys come from the config file (``[[keys]]``) and, optionally, from a ``KeySource`` (the
database, kraken/accounts/keystore.py). A database key is looked up by id only on a cache
miss; its row is cached (bounded, ``cache_ttl_s``) and unknown ids are cached negatively
(``negative_ttl_s``). Database keys must carry a valid checksum, so typos and made-up keys are
refused without any lookup. ``evict`` (driven by kraken/accounts/revocation.py) forgets
revoked, deleted or changed keys within a second.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from typing import Callable, Iterable, NamedTuple

from kraken import errors
from kraken.config import AuthConfig, KeyConfig
from kraken.policy.bcrypt_pool import AttemptGate, BcryptPool
from kraken.accounts.keys import KEY_ID_RE, MAX_KEY_LEN, check_key, checksum_ok, parse_key
from kraken.accounts.principal import KeyRow, KeySource, Principal
from kraken.metrics import AUTH_CACHE, AUTH_CACHE_SIZE, AUTH_FAILURES

INVALID_KEY_MESSAGE = (
    "Invalid or missing API key. Send a Kraken key as 'Authorization: Bearer <key>' "
    "or in the 'x-api-key' header."
)
"""The one message for every kind of bad key, so a caller learns nothing about which it was."""

PENDING_PER_THREAD = 64
"""Queued bcrypt runs allowed per pool thread before new cache misses are refused with 503."""

_digest = hashlib.blake2s
"""The cache's key for a token: BLAKE2s-256 (CPython's own code) costs ~2.8 us per request in
a running server where SHA-256 through OpenSSL's EVP layer cost ~5.4 us (cold caches, median)."""

_HIT = AUTH_CACHE.labels("hit")
_MISS = AUTH_CACHE.labels("miss")
_NEGATIVE_HIT = AUTH_CACHE.labels("negative_hit")
_DB_LOOKUP = AUTH_CACHE.labels("db_lookup")


def check_model_allowed(principal: Principal, model: str) -> None:
    """Raise 403 ``model_not_allowed`` unless the key may call ``model`` (the public name the
    client sent); O(1), called after routing so unknown models still get their 404."""
    allowed = principal.allowed_models
    if allowed is not None and model not in allowed:
        raise errors.ModelNotAllowed("This API key is not allowed to use this model.")


class _Key(NamedTuple):
    hash: str
    principal: Principal
    expires_at: float | None = None
    """Wall-clock expiry of the key itself (database keys)."""
    fresh_until: float = float("inf")
    """Monotonic time after which a cached database row is fetched again."""


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


class _WrongSecret(errors.Unauthorized):
    """The bcrypt run this request started said no: giving back the address's attempt
    counted the failure already (the client sees the one uniform 401)."""


def _unauthorized(kind: type[errors.Unauthorized] = errors.Unauthorized) -> errors.Unauthorized:
    AUTH_FAILURES.inc()
    return kind(INVALID_KEY_MESSAGE)


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
        source: KeySource | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._checker = checker
        self._clock = clock
        threads = max(1, cfg.bcrypt_threads)
        self._max_pending = max_pending if max_pending is not None else PENDING_PER_THREAD * threads
        self._bcrypt = BcryptPool(checker, threads, self._max_pending)
        self._keys: dict[str, _Key] = {}
        # digest of the presented token -> entry; OrderedDict so the oldest is evicted first.
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._negative: OrderedDict[bytes, _Entry] = OrderedDict()
        self._source = source
        self._wall = wall_clock
        # Database key rows by id and ids known not to be usable: both bounded (oldest out first)
        # and TTL-limited.
        self._db: OrderedDict[str, _Key] = OrderedDict()
        self._db_missing: OrderedDict[str, float] = OrderedDict()
        self._fetching: dict[str, asyncio.Future[KeyRow | None]] = {}
        self._epoch = 0
        """Bumped by every eviction: a row fetched across one is used once, not cached."""
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
        self._drop(lambda e: (cur := self._key(e.key_id)) is None or cur.hash != e.hash)

    def revoke(self, key_id: str) -> None:
        """Forget ``key_id`` now, including every cached verification of it."""
        self._keys.pop(key_id, None)
        self.evict([key_id])

    def evict(self, key_ids: Iterable[str]) -> None:
        """Forget cached database rows and verifications of ``key_ids`` (revoked, deleted or
        changed: the next request looks the key up again). Config keys are unaffected."""
        ids = set(key_ids)
        if not ids:
            return
        self._epoch += 1
        for key_id in ids:
            self._db.pop(key_id, None)
            self._db_missing.pop(key_id, None)
        self._drop(lambda e: e.key_id in ids and e.key_id not in self._keys)

    def _drop(self, stale: Callable[[_Entry], bool]) -> None:
        # O(cache size), but only on reload or revocation, never per request.
        for cache in (self._cache, self._negative):
            for digest in [d for d, e in cache.items() if stale(e)]:
                del cache[digest]
        self._update_size()

    def _update_size(self) -> None:
        AUTH_CACHE_SIZE.set(len(self._cache) + len(self._negative) + len(self._db)
                            + len(self._db_missing))

    def close(self) -> None:
        """Shut down the bcrypt pool; later cache misses are refused with 503."""
        self._bcrypt.close()

    # -- hot path ----------------------------------------------------------------------------

    def _key(self, key_id: str) -> _Key | None:
        """The usable key for ``key_id`` known without I/O: config first, then a cached row."""
        key = self._keys.get(key_id)
        if key is not None:
            return key
        key = self._db.get(key_id)
        if key is None:
            return None
        if key.fresh_until <= self._clock() or (
                key.expires_at is not None and key.expires_at <= self._wall()):
            del self._db[key_id]
            self._update_size()
            return None
        return key

    def lookup_cached(self, token: bytes) -> Principal | None:
        """A Principal if ``token`` was verified within the TTL, else None. Sync and O(1)."""
        return self._lookup(_digest(token).digest())

    def _lookup(self, digest: bytes) -> Principal | None:
        # A dict lookup by digest: the token is never compared byte by byte, so
        # there is no secret-dependent comparison to hand to hmac.compare_digest.
        entry = self._cache.get(digest)
        if entry is None:
            return None
        # The entry is only valid while its key is present with the hash it was checked against;
        # that makes revoke(), evict() and replace_keys() effective immediately, whatever the
        # cache holds.
        key = self._key(entry.key_id) if entry.expires > self._clock() else None
        if key is None or key.hash != entry.hash:
            del self._cache[digest]
            self._update_size()
            return None
        self._cache.move_to_end(digest)
        _HIT.inc()
        return key.principal

    async def verify(self, token: bytes | None, gate: AttemptGate | None = None) -> Principal:
        """The Principal for ``token`` (already stripped of "Bearer "), or raise Unauthorized.

        Raises ``errors.Overloaded`` (503) when the bcrypt queue is full or the pool is closed.
        With ``gate`` (the client address, kraken/policy/authgate.py) a bcrypt run first holds
        one of the address's attempts (``RateLimitExceeded``, 429, when it has none left), and
        every Unauthorized counts as one failure of the address.
        """
        try:
            return await self._verify(token, gate)
        except _WrongSecret:
            raise  # counted when the run gave the address's attempt back
        except errors.Unauthorized:
            if gate is not None:
                await gate.failed()
            raise

    async def _verify(self, token: bytes | None, gate: AttemptGate | None) -> Principal:
        if not token or len(token) > MAX_KEY_LEN:
            raise _unauthorized()
        digest = _digest(token).digest()
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
        if key_id not in self._keys and not checksum_ok(text):
            # Database keys carry a checksum: a typo or a made-up key is refused before any
            # lookup or bcrypt run. Config keys (and the demo key) may lack one.
            raise _unauthorized()
        key = self._key(key_id)
        if key is None:
            key = await self._fetch_db_key(key_id)
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
        # Keyed by the hash too: after a reload changed it, a run against the old hash must
        # not answer for the new one.
        hashed = key.hash
        run, started = await self._bcrypt.run(
            (digest, hashed), text, hashed,
            lambda f: self._settle(digest, key_id, hashed, f), gate)
        # Shielded: a waiter cancelled by a client disconnect must not cancel the shared run.
        if not await asyncio.shield(run):
            counted = started and gate is not None
            raise _unauthorized(_WrongSecret if counted else errors.Unauthorized)
        current = self._key(key_id)
        if current is None and key_id not in self._keys and self._source is not None:
            current = await self._fetch_db_key(key_id)  # evicted meanwhile: re-read
        if current is not None and current.hash == hashed:  # not revoked meanwhile
            return current.principal
        raise _unauthorized()

    async def _fetch_db_key(self, key_id: str) -> _Key | None:
        """Look a database key up by id (cache miss only); None if unknown/revoked/expired."""
        if self._source is None:
            return None
        missing = self._db_missing.get(key_id)
        if missing is not None:
            if missing > self._clock():
                _NEGATIVE_HIT.inc()
                return None
            del self._db_missing[key_id]
        fut = self._fetching.get(key_id)
        if fut is None:
            if self._bcrypt.closed or len(self._fetching) >= self._max_pending:
                raise errors.Overloaded("Authentication is overloaded; retry shortly.")
            fut = asyncio.ensure_future(self._fetch_row(key_id))
            self._fetching[key_id] = fut
            fut.add_done_callback(lambda f: self._fetching.pop(key_id, None))
        row = await asyncio.shield(fut)
        if row is None:
            return None
        key = self._db.get(key_id)  # cached by _fetch_row unless an eviction raced it
        return key if key is not None else _Key(row.hash, row.principal, row.expires_at)

    async def _fetch_row(self, key_id: str) -> KeyRow | None:
        epoch = self._epoch
        _DB_LOOKUP.inc()
        try:
            row = await self._source.fetch(key_id)
        except errors.KrakenError:
            raise
        except Exception:  # noqa: BLE001 - store unavailable: a 503, never a 401 or 500
            raise errors.Overloaded("Authentication is unavailable; retry shortly.") from None
        if epoch != self._epoch or self._cfg.cache_max <= 0:
            return row  # an eviction ran while we read: use this row once, cache nothing
        now = self._clock()
        if row is None:
            if self._cfg.negative_ttl_s > 0:
                self._db_missing[key_id] = now + self._cfg.negative_ttl_s
                self._db_missing.move_to_end(key_id)
                while len(self._db_missing) > self._cfg.cache_max:
                    self._db_missing.popitem(last=False)
        elif self._cfg.cache_ttl_s > 0:
            self._db[key_id] = _Key(row.hash, row.principal, row.expires_at,
                                    now + self._cfg.cache_ttl_s)
            self._db.move_to_end(key_id)
            while len(self._db) > self._cfg.cache_max:
                self._db.popitem(last=False)
        self._update_size()
        return row

    def _settle(self, digest: bytes, key_id: str, hashed: str, fut: asyncio.Future[bool]) -> None:
        """Cache a finished run's answer (positive or negative) for the token's digest."""
        if fut.cancelled() or fut.exception() is not None:
            return
        key = self._key(key_id)
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
