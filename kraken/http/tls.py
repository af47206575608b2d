"""Inbound TLS: the server ``SSLContext``, certificate checks and hot certificate reload.

The context follows Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only; for TLS 1.2
only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305; groups X25519, P-256, P-384;
client cipher order (every allowed suite is strong, and clients without AES hardware
prefer ChaCha20); no compression; no session tickets (resumption would need ticket-key
rotation across reloads and processes for little gain on long-lived API connections).
ALPN offers ``h2`` then ``http/1.1``. No OCSP stapling: Let's Encrypt ended OCSP in 2025.

Reload without closing anything: the listener keeps one *outer* context forever, whose
``sni_callback`` runs early in every new handshake (with or without SNI) and moves that
connection onto the *current* context (``SSLObject.context = current``, i.e.
``SSL_set_SSL_CTX``). ``CertificateReloader.reload()`` only replaces ``current``;
established connections keep the context they were accepted with, and the listening
socket is never touched. Works on uvloop and on the stock asyncio loop.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import logging
import os
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("kraken.tls")

ALPN_PROTOCOLS = ("h2", "http/1.1")

INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
))
"""TLS 1.2 suites (Mozilla intermediate without the DHE ones). TLS 1.3 suites are
OpenSSL's defaults, which are exactly Mozilla's three AEAD suites."""

INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"

HSTS_HEADER = b"strict-transport-security"
HSTS_DEFAULT_MAX_AGE = 31_536_000
"""One year: the HSTS preload list's minimum. Mozilla's profile suggests two (63072000)."""

EXPIRY_WARNING = dt.timedelta(days=14)
"""Log a warning when the certificate loaded expires sooner than this (renewal is failing:
certbot renews 30 days before expiry)."""


class TLSConfigError(ValueError):
    """The certificate or key can't be used; the message names the file and never
    contains key material."""


def hsts_value(max_age: int = HSTS_DEFAULT_MAX_AGE, *, include_subdomains: bool = False,
               preload: bool = False) -> bytes:
    """The ``Strict-Transport-Security`` value. Send it on TLS responses only: browsers
    ignore it over plain HTTP (RFC 6797 §7.2)."""
    if max_age < 0:
        raise ValueError("HSTS max-age must be non-negative")
    if preload and (max_age < 31_536_000 or not include_subdomains):
        raise ValueError("HSTS preload needs max-age >= 31536000 and includeSubDomains")
    value = b"max-age=%d" % max_age
    if include_subdomains:
        value += b"; includeSubDomains"
    if preload:
        value += b"; preload"
    return value


def hsts_header(max_age: int = HSTS_DEFAULT_MAX_AGE, **kwargs: bool) -> tuple[bytes, bytes]:
    """``(name, value)`` ready to append to a response's headers."""
    return HSTS_HEADER, hsts_value(max_age, **kwargs)


def alpn_protocol(transport: object) -> str:
    """The protocol a TLS transport negotiated: ``"h2"`` or ``"http/1.1"`` (also when the
    client sent no ALPN, or the transport is plain TCP)."""
    get = getattr(transport, "get_extra_info", None)
    ssl_object = get("ssl_object") if get is not None else None
    if ssl_object is None:
        return "http/1.1"
    return ssl_object.selected_alpn_protocol() or "http/1.1"


# ---- checking the files -------------------------------------------------------------------

def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TLSConfigError(f"{path}: TLS {what} file not found") from None
    except PermissionError:
        raise TLSConfigError(
            f"{path}: TLS {what} file is not readable by uid {os.geteuid()}"
            " (the key should be mode 0640, group kraken)") from None
    except OSError as exc:
        raise TLSConfigError(f"{path}: can't read TLS {what} file: {exc.strerror}") from None


def check_pair(cert_pem: bytes, key_pem: bytes, cert_path: str | os.PathLike[str],
               key_path: str | os.PathLike[str], now: dt.datetime | None = None,
               ) -> x509.Certificate:
    """Validate PEM bytes: the first certificate (the leaf, as in certbot's fullchain.pem)
    is in its validity period and matches the private key. Returns the leaf."""
    # Imported here: cryptography is ~8 MB of RSS that a plain-HTTP gateway never uses.
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TLSConfigError(f"{cert_path}: not a PEM certificate (chain)") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TLSConfigError(
            f"{key_path}: the private key is encrypted; Kraken needs an unencrypted key"
            " protected by file permissions") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        # only the exception type: a message could quote the input
        raise TLSConfigError(f"{key_path}: not a usable PEM private key"
                             f" ({type(exc).__name__})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise TLSConfigError(
            f"{key_path}: the private key does not match the certificate in {cert_path}"
            f" (serial {leaf.serial_number:x})")
    now = now or dt.datetime.now(dt.timezone.utc)
    if now < leaf.not_valid_before_utc:
        raise TLSConfigError(
            f"{cert_path}: the certificate is not valid before"
            f" {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC (check the clock)")
    if now > leaf.not_valid_after_utc:
        raise TLSConfigError(
            f"{cert_path}: the certificate expired on"
            f" {leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    return leaf


# ---- the context --------------------------------------------------------------------------

def _set_groups(ctx: ssl.SSLContext, groups: str) -> bool:
    """Restrict the key-exchange groups (``SSL_CTX_set1_groups_list``).

    Python 3.11's ``ssl`` can't do it: ``set_ecdh_curve`` sets exactly one group, which
    would drop X25519 or P-256 for someone. The call goes through ctypes to the same libssl
    the ``_ssl`` module uses; the ``SSL_CTX*`` is the first field after the object header
    of CPython's ``PySSLContext`` and is checked (its options must equal ``ctx.options``)
    before anything is written. On any doubt OpenSSL's default groups stay: they add x448,
    P-521 and FFDHE, all still strong.
    """
    if sys.implementation.name != "cpython" or ssl.OPENSSL_VERSION_INFO < (1, 1, 1):
        return False
    try:
        import _ssl

        lib = ctypes.CDLL(getattr(_ssl, "__file__", None))
        ctrl, get_options = lib.SSL_CTX_ctrl, lib.SSL_CTX_get_options
    except (OSError, AttributeError):
        return False
    get_options.argtypes, get_options.restype = [ctypes.c_void_p], ctypes.c_uint64
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    ctrl.restype = ctypes.c_long
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or get_options(ptr) != int(ctx.options):
        return False
    ssl_ctrl_set_groups_list = 92
    return ctrl(ptr, ssl_ctrl_set_groups_list, 0, groups.encode("ascii")) == 1


def _context_from_files(cert_path: str, key_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE  # Python sets it; Mozilla says off
    ctx.num_tickets = 0  # TLS 1.3 tickets
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS))
    if not _set_groups(ctx, INTERMEDIATE_GROUPS):
        log.warning("could not restrict TLS groups to %s; using OpenSSL's defaults",
                    INTERMEDIATE_GROUPS)
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"{cert_path} / {key_path}: OpenSSL refused the pair ({exc.reason or exc})") from None
    except OSError as exc:
        raise TLSConfigError(f"{cert_path} / {key_path}: {exc.strerror}") from None
    return ctx


def _build(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
           now: dt.datetime | None) -> tuple[ssl.SSLContext, x509.Certificate]:
    cert_file, key_file = Path(cert_path), Path(key_path)
    for _ in range(3):
        cert_pem, key_pem = _read(cert_file, "certificate"), _read(key_file, "key")
        leaf = check_pair(cert_pem, key_pem, cert_file, key_file, now)
        ctx = _context_from_files(str(cert_file), str(key_file))
        # OpenSSL reads the files again: make sure it loaded what was checked (a deploy
        # hook may be replacing them right now).
        if _read(cert_file, "certificate") == cert_pem and _read(key_file, "key") == key_pem:
            return ctx, leaf
    raise TLSConfigError(f"{cert_file} / {key_file}: the files keep changing while loading")


def build_context(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                  *, now: dt.datetime | None = None) -> ssl.SSLContext:
    """A server context with the Mozilla intermediate profile for this certificate chain
    (PEM, leaf first) and private key (PEM, unencrypted). Raises ``TLSConfigError``
    naming the file when the key doesn't match or the certificate is not valid now."""
    return _build(cert_path, key_path, now)[0]


class CertificateReloader:
    """Holds the TLS context of a listener and swaps in a new certificate on ``reload()``.

    Give ``reloader.context`` to ``loop.create_server(ssl=...)``; it never changes. New
    handshakes use the certificate of the last successful load; connections already
    open keep theirs.
    """

    def __init__(self, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]):
        self.cert_path, self.key_path = str(cert_path), str(key_path)
        self._current, self._leaf = _build(self.cert_path, self.key_path, None)
        self._outer = self._current
        self._outer.sni_callback = self._select
        self._log_loaded("loaded")

    @property
    def context(self) -> ssl.SSLContext:
        """The stable context for the listener."""
        return self._outer

    @property
    def current(self) -> ssl.SSLContext:
        """The context new handshakes switch to."""
        return self._current

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf certificate new handshakes present (serial, expiry for metrics)."""
        return self._leaf

    @property
    def not_after(self) -> dt.datetime:
        return self._leaf.not_valid_after_utc

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None,
                ctx: ssl.SSLContext) -> None:
        current = self._current
        if current is not ctx:
            ssl_object.context = current

    def reload(self) -> bool:
        """Load the files again; on success new handshakes use them. On failure the old
        certificate stays in service and the error is logged (file names, never keys)."""
        try:
            ctx, leaf = _build(self.cert_path, self.key_path, None)
        except TLSConfigError as exc:
            log.error("TLS certificate reload failed, keeping serial %x (expires %s): %s",
                      self._leaf.serial_number, f"{self.not_after:%Y-%m-%d}", exc)
            return False
        self._current, self._leaf = ctx, leaf
        self._log_loaded("reloaded")
        return True

    def _log_loaded(self, verb: str) -> None:
        left = self.not_after - dt.datetime.now(dt.timezone.utc)
        level = logging.WARNING if left < EXPIRY_WARNING else logging.INFO
        log.log(level, "TLS certificate %s from %s: serial %x, expires %s (in %d days)", verb,
                self.cert_path, self._leaf.serial_number, f"{self.not_after:%Y-%m-%d %H:%M}Z",
                left.days)


def main(argv: list[str] | None = None) -> int:
    """``python -m kraken.http.tls CERT KEY``: the checks Kraken runs on load, for the
    certbot deploy hook to run before it installs anything. Exit 0 if usable, 1 if not."""
    logging.basicConfig(level=logging.INFO, format="kraken tls check: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        log.error("usage: python -m kraken.http.tls FULLCHAIN.pem PRIVKEY.pem")
        return 2
    try:
        _, leaf = _build(args[0], args[1], None)
    except TLSConfigError as exc:
        log.error("%s", exc)
        return 1
    log.info("ok: serial %x, expires %sZ", leaf.serial_number,
             f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
