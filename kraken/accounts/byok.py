"""BYOK: a customer's own provider key, stored only as an AES-256-GCM ciphertext.

Each encryption uses a fresh random 96-bit nonce and binds the row's identity as associated
data (customer id, provider, master key version), so a ciphertext copied to another customer
or provider, or relabelled with another version, fails to decrypt. No plaintext fragment (no
"last 4") is stored. Deleting the row removes the ciphertext at once (secure_delete is on);
deleting the customer cascades. Triggers bump ``byok_state.generation`` on every change, which
every Kraken process polls to drop its decrypted-key cache (``byok_cache``).

The admin API (kraken/admin) and the CLI call these functions; errors are ``AccountError``s
naming the field and never containing the key.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from kraken.accounts.masterkey import Keyring
from kraken.accounts.validation import AccountError, NotFoundError, ValidationError

PROVIDERS: frozenset[str] = frozenset(
    {"cohere", "together", "fireworks", "openrouter", "perplexity"} |  # hosted, Bearer
    {"openai", "anthropic", "mistral", "groq", "deepseek", "xai", "gemini", "azure_openai"})
"""Provider kinds a customer may bring a key for: only the vendors' own APIs, never an
operator-configured self-hosted URL (a customer's key must not reach a server it did not pick).
An Azure OpenAI key goes to the resource endpoint the operator configured for that kind."""
KEY_MAX = 1024
NONCE_BYTES = 12
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: it goes into a header


class ByokKeyUnusable(AccountError):
    """A stored ciphertext cannot be decrypted (master key version removed, or tampering)."""

    status = 503
    error_type = "byok_unavailable"
    code = "byok_unavailable"


@dataclass(frozen=True, slots=True)
class Sealed:
    key_version: int
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ByokEntry:
    """What may be shown about a stored key: who, which provider, which master version, when."""

    customer_id: str
    provider: str
    key_version: int
    created_at: float
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "provider": self.provider,
                "key_version": self.key_version, "created_at": self.created_at,
                "updated_at": self.updated_at}


@dataclass(frozen=True, slots=True)
class RotateReport:
    newest: int
    rotated: int
    """Rows re-encrypted from an older version."""
    current: int
    """Rows already under the newest version (re-encrypted with a fresh nonce all the same)."""
    by_version: dict[int, int]
    """Rows per version before the rotation."""

    def as_dict(self) -> dict[str, Any]:
        return {"newest_version": self.newest, "rotated": self.rotated, "already_current": self.current,
                "before": {str(k): v for k, v in sorted(self.by_version.items())}}


# ---- validation ----------------------------------------------------------------------

def provider(value: Any, field: str = "provider") -> str:
    if not isinstance(value, str) or value not in PROVIDERS:
        raise ValidationError(field, f"must be one of {', '.join(sorted(PROVIDERS))}")
    return value


def secret(value: Any, field: str = "api_key") -> str:
    """A provider key as it will go into an HTTP header; the error never repeats it."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "is required and must be a string")
    value = value.strip()
    if not value:
        raise ValidationError(field, "is required and must be a string")
    if len(value) > KEY_MAX:
        raise ValidationError(field, f"is longer than {KEY_MAX} characters")
    if not _KEY_CHARS.fullmatch(value):
        raise ValidationError(field, "must be printable ASCII without spaces")
    return value


def _customer_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64:
        raise NotFoundError("customer_id", "no such customer")
    return value


# ---- crypto --------------------------------------------------------------------------

def _aad(customer_id: str, provider_kind: str, version: int) -> bytes:
    # Length-prefixed parts: ("ab","c") and ("a","bc") never give the same bytes.
    parts = [b"kraken-byok-v1", customer_id.encode(), provider_kind.encode(), str(version).encode()]
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def seal(keyring: Keyring, customer_id: str, provider_kind: str, plaintext: str) -> Sealed:
    # Imported at first use: cryptography is ~8 MB of RSS, and most gateways hold no BYOK key.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    version = keyring.newest
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(keyring.keys[version]).encrypt(
        nonce, plaintext.encode(), _aad(customer_id, provider_kind, version))
    return Sealed(version, nonce, ciphertext)


def unseal(keyring: Keyring | None, customer_id: str, provider_kind: str, sealed: Sealed) -> str:
    """The plaintext key, or ``ByokKeyUnusable`` (the message names no key material)."""
    master = keyring.key(sealed.key_version) if keyring is not None else None
    if master is None:
        raise ByokKeyUnusable(None, f"BYOK master key version {sealed.key_version} is not configured")
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        plain = AESGCM(master).decrypt(sealed.nonce, sealed.ciphertext,
                                       _aad(customer_id, provider_kind, sealed.key_version))
    except (InvalidTag, ValueError):
        raise ByokKeyUnusable(None, "a stored BYOK key failed authentication") from None
    return plain.decode()


# ---- storage -------------------------------------------------------------------------

async def set_key(store, keyring: Keyring, customer_id: str, provider_kind: str,
                  api_key: str) -> ByokEntry:
    """Store (or replace) the customer's key for ``provider_kind``, encrypted."""
    customer_id = _customer_id(customer_id)
    provider_kind = provider(provider_kind)
    sealed = seal(keyring, customer_id, provider_kind, secret(api_key))
    now = time.time()
    async with store.transaction() as tx:
        if not await tx.accounts.customer_exists(tx, customer_id):
            raise NotFoundError("customer_id", "no such customer")
        created_at = await tx.accounts.upsert_byok(
            tx, customer_id, provider_kind, sealed.key_version, sealed.nonce, sealed.ciphertext,
            now)
    return ByokEntry(customer_id, provider_kind, sealed.key_version,
                     now if created_at is None else created_at, now)


async def delete_key(store, customer_id: str, provider_kind: str) -> None:
    """Remove the ciphertext now; ``NotFoundError`` if there was none."""
    customer_id = _customer_id(customer_id)
    provider_kind = provider(provider_kind)
    async with store.transaction() as tx:
        deleted = await tx.accounts.delete_byok(tx, customer_id, provider_kind)
    if not deleted:
        raise NotFoundError("provider", "no BYOK key stored for this customer and provider")


async def list_keys(store, customer_id: str | None = None) -> list[ByokEntry]:
    """Stored keys (metadata only), for one customer or all."""
    if customer_id is not None:
        customer_id = _customer_id(customer_id)
    rows = await store.accounts.byok_entries(store, customer_id)
    return [ByokEntry(*row) for row in rows]


async def rotate(store, keyring: Keyring) -> RotateReport:
    """Re-encrypt every stored key under the newest master version, all in one transaction.

    Any row that does not decrypt aborts the whole rotation (nothing changes) with an error
    naming the customer and provider, so an old version is never removed too early.
    """
    newest = keyring.newest
    by_version: dict[int, int] = {}
    async with store.transaction() as tx:
        rows = await tx.accounts.byok_sealed(tx)
        updates = []
        for customer_id, provider_kind, version, nonce, ciphertext in rows:
            by_version[version] = by_version.get(version, 0) + 1
            try:
                plain = unseal(keyring, customer_id, provider_kind,
                               Sealed(version, bytes(nonce), bytes(ciphertext)))
            except ByokKeyUnusable as exc:
                raise ByokKeyUnusable(None, f"customer {customer_id} provider {provider_kind}: "
                                            f"{exc.message}; nothing was rotated") from None
            sealed = seal(keyring, customer_id, provider_kind, plain)
            del plain
            updates.append((sealed.key_version, sealed.nonce, sealed.ciphertext,
                            customer_id, provider_kind))
        if updates:
            await tx.accounts.reseal_byok(tx, updates)
    rotated = sum(n for v, n in by_version.items() if v != newest)
    return RotateReport(newest, rotated, by_version.get(newest, 0), by_version)


async def keys_of(store, keyring: Keyring | None, customer_id: str) -> dict[str, str | ByokKeyUnusable]:
    """provider kind -> plaintext key (or the reason it is unusable) for one customer."""
    rows = await store.accounts.byok_sealed_of(store, customer_id)
    out: dict[str, str | ByokKeyUnusable] = {}
    for provider_kind, version, nonce, ciphertext in rows:
        try:
            out[provider_kind] = unseal(keyring, customer_id, provider_kind,
                                        Sealed(version, bytes(nonce), bytes(ciphertext)))
        except ByokKeyUnusable as exc:
            out[provider_kind] = exc
    return out


async def state(store) -> tuple[int, int]:
    """(generation, number of stored keys): one row, read by every process's cache poller."""
    return await store.accounts.byok_state(store)
