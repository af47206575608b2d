"""Inbound TLS on real loopback sockets: the Mozilla intermediate profile, ALPN, the checks
on the certificate files, and certificate reload without closing the listener."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import shutil
import ssl
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kraken.http import tls

pytestmark = pytest.mark.anyio

UVLOOP = ("asyncio", {"use_uvloop": True})
STOCK = ("asyncio", {})
BOTH_LOOPS = pytest.mark.parametrize("anyio_backend", [UVLOOP, STOCK], ids=["uvloop", "asyncio"])

NOW = dt.datetime.now(dt.timezone.utc)
DAY = dt.timedelta(days=1)


# ---- certificates ---------------------------------------------------------------------------

@dataclass
class Pair:
    cert_pem: bytes
    key_pem: bytes
    serial: int


def leaf(ca: trustme.CA, *, not_before: dt.datetime = NOW - DAY,
         not_after: dt.datetime = NOW + 90 * DAY, key: ec.EllipticCurvePrivateKey | None = None,
         ) -> Pair:
    """A leaf for localhost/127.0.0.1 signed by ``ca``, made with cryptography directly so
    that validity dates can lie in the past (and the SAN is non-critical, which strict
    validators such as sslyze's require; trustme marks it critical)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Pair(cert.public_bytes(serialization.Encoding.PEM), key_pem, serial)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(tmp_path: Path):
    """``install(pair)`` writes a pair where the server reads it; returns the two paths."""
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"

    def install(pair: Pair, *, cert_pem: bytes | None = None) -> tuple[Path, Path]:
        cert.write_bytes(cert_pem if cert_pem is not None else pair.cert_pem)
        key.write_bytes(pair.key_pem)
        return cert, key

    return install


# ---- a TLS echo server and a client ---------------------------------------------------------

async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tls_server(context: ssl.SSLContext):
    server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def client_context(ca: trustme.CA, *, alpn: list[str] | None = None,
                   version: ssl.TLSVersion | None = None, ciphers: str | None = None,
                   curve: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    if version is not None:
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 only offers TLS < 1.2 at level 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
    if ciphers is not None:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def tls(self) -> ssl.SSLObject:
        return self.writer.get_extra_info("ssl_object")

    @property
    def serial(self) -> int:
        return x509.load_der_x509_certificate(self.tls.getpeercert(binary_form=True)).serial_number

    async def echo(self, data: bytes = b"ping\n") -> bytes:
        self.writer.write(data)
        async with asyncio.timeout(5):
            return await self.reader.readline()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(port: int, ctx: ssl.SSLContext):
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="localhost")
    client = Client(reader, writer)
    try:
        yield client
    finally:
        await client.close()


async def handshake_fails(port: int, ctx: ssl.SSLContext) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        async with connect(port, ctx) as client:
            await client.echo()


def permissive_context(pair_files: tuple[Path, Path]) -> ssl.SSLContext:
    """A server that accepts everything OpenSSL can do: proves a refusing test's client
    really offers what it claims (OpenSSL 3 clients drop old protocols silently)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(*pair_files)
    return ctx


# ---- the profile ------------------------------------------------------------------------------

async def test_handshake_presents_the_certificate_chain(ca, files):
    pair = leaf(ca)
    context = tls.build_context(*files(pair))
    async with tls_server(context) as port, connect(port, client_context(ca)) as client:
        assert client.serial == pair.serial
        assert client.tls.version() == "TLSv1.3"
        assert await client.echo() == b"ping\n"


@pytest.mark.parametrize("offered, chosen", [
    (["h2", "http/1.1"], "h2"),
    (["http/1.1", "h2"], "h2"),
    (["http/1.1"], "http/1.1"),
    (None, None),
])
async def test_alpn_prefers_h2_when_offered(ca, files, offered, chosen):
    context = tls.build_context(*files(leaf(ca)))
    async with tls_server(context) as port, \
            connect(port, client_context(ca, alpn=offered)) as client:
        assert client.tls.selected_alpn_protocol() == chosen
        assert tls.alpn_protocol(client.writer.transport) == (chosen or "http/1.1")


def test_alpn_protocol_of_a_plain_transport_is_http11():
    class Plain:
        def get_extra_info(self, name, default=None):
            return default

    assert tls.alpn_protocol(Plain()) == "http/1.1"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls12_and_tls13_are_accepted(ca, files, version):
    context = tls.build_context(*files(leaf(ca)))
    async with tls_server(context) as port, \
            connect(port, client_context(ca, version=version)) as client:
        name, protocol, _ = client.tls.cipher()
        assert protocol == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                            ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert "GCM" in name or "CHACHA20" in name
        assert await client.echo() == b"ping\n"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1],
                         ids=["tls1.0", "tls1.1"])
async def test_tls10_and_tls11_are_refused(ca, files, version):
    paths = files(leaf(ca))
    old_client = client_context(ca, version=version)
    async with tls_server(permissive_context(paths)) as port, connect(port, old_client) as ok:
        assert ok.tls.version() in ("TLSv1", "TLSv1.1")
    async with tls_server(tls.build_context(*paths)) as port:
        await handshake_fails(port, old_client)


@pytest.mark.parametrize("cipher", [
    "ECDHE-ECDSA-AES128-SHA256",   # CBC + HMAC, not AEAD
    "ECDHE-ECDSA-AES256-SHA",
])
async def test_non_aead_cipher_is_refused_for_tls12(ca, files, cipher):
    paths = files(leaf(ca))
    cbc_client = client_context(ca, ciphers=cipher + ":@SECLEVEL=0")
    async with tls_server(permissive_context(paths)) as port, connect(port, cbc_client) as ok:
        assert ok.tls.cipher()[0] == cipher
    async with tls_server(tls.build_context(*paths)) as port:
        await handshake_fails(port, cbc_client)


@pytest.mark.parametrize("cipher", [
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
])
async def test_every_intermediate_tls12_suite_is_accepted(ca, files, cipher):
    context = tls.build_context(*files(leaf(ca)))
    async with tls_server(context) as port, \
            connect(port, client_context(ca, ciphers=cipher)) as client:
        assert client.tls.cipher()[0] == cipher


@pytest.mark.parametrize("first, second", [
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
])
async def test_client_cipher_order_wins(ca, files, first, second):
    """Mozilla intermediate: server cipher preference off."""
    context = tls.build_context(*files(leaf(ca)))
    async with tls_server(context) as port, \
            connect(port, client_context(ca, ciphers=f"{first}:{second}")) as client:
        assert client.tls.cipher()[0] == first


@pytest.mark.parametrize("curve, accepted", [
    ("X25519", True), ("prime256v1", True), ("secp384r1", True), ("secp521r1", False),
])
async def test_key_exchange_groups_are_x25519_p256_p384(ca, files, curve, accepted):
    context = tls.build_context(*files(leaf(ca)))
    async with tls_server(context) as port:
        if accepted:
            async with connect(port, client_context(ca, curve=curve)) as client:
                assert await client.echo() == b"ping\n"
        else:
            await handshake_fails(port, client_context(ca, curve=curve))


def test_context_disables_compression_tickets_and_server_preference(ca, files):
    context = tls.build_context(*files(leaf(ca)))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_TICKET
    assert context.num_tickets == 0
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(tls.INTERMEDIATE_CIPHERS.split(":"))


@pytest.mark.parametrize("server", ["kraken", "python default (control)"])
async def test_no_session_ticket_is_issued(ca, files, server):
    paths = files(leaf(ca))
    if server == "kraken":
        context = tls.build_context(*paths)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*paths)
    async with tls_server(context) as port, connect(port, client_context(ca)) as client:
        await client.echo()  # TLS 1.3 tickets arrive after the handshake
        ticket = client.tls.session is not None and client.tls.session.has_ticket
    assert ticket == (server != "kraken")


# ---- checks on the files ------------------------------------------------------------------------

def test_mismatched_key_is_refused_naming_the_key_file(ca, files):
    good, other = leaf(ca), leaf(ca)
    cert, key = files(Pair(good.cert_pem, other.key_pem, good.serial))
    with pytest.raises(tls.TLSConfigError) as err:
        tls.build_context(cert, key)
    assert str(key) in str(err.value) and "does not match" in str(err.value)
    assert _no_key_material(str(err.value), other)


def test_expired_certificate_is_refused_naming_the_file(ca, files):
    pair = leaf(ca, not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    cert, key = files(pair)
    with pytest.raises(tls.TLSConfigError, match="expired") as err:
        tls.build_context(cert, key)
    assert str(cert) in str(err.value)


def test_not_yet_valid_certificate_is_refused(ca, files):
    cert, key = files(leaf(ca, not_before=NOW + DAY, not_after=NOW + 90 * DAY))
    with pytest.raises(tls.TLSConfigError, match="not valid before") as err:
        tls.build_context(cert, key)
    assert str(cert) in str(err.value)


def test_missing_files_are_named(ca, files, tmp_path):
    cert, key = files(leaf(ca))
    with pytest.raises(tls.TLSConfigError, match="not found") as err:
        tls.build_context(tmp_path / "nope.pem", key)
    assert "nope.pem" in str(err.value)
    with pytest.raises(tls.TLSConfigError, match="not found") as err:
        tls.build_context(cert, tmp_path / "nokey.pem")
    assert "nokey.pem" in str(err.value)


def test_garbage_and_encrypted_keys_are_refused(ca, files, tmp_path):
    pair = leaf(ca)
    cert, key = files(pair, cert_pem=b"not a certificate\n")
    with pytest.raises(tls.TLSConfigError, match="not a PEM certificate"):
        tls.build_context(cert, key)
    cert, key = files(pair)
    private = serialization.load_pem_private_key(pair.key_pem, password=None)
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(tls.TLSConfigError, match="encrypted") as err:
        tls.build_context(cert, key)
    assert str(key) in str(err.value)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(tls.TLSConfigError, match="not a usable PEM private key"):
        tls.build_context(cert, key)


def test_unreadable_key_is_named(ca, files, monkeypatch):
    cert, key = files(leaf(ca))
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == key:  # root reads any file, so chmod 000 can't show this under test
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(tls.TLSConfigError, match="not readable") as err:
        tls.build_context(cert, key)
    assert str(key) in str(err.value)


def test_full_chain_leaf_first_is_accepted(ca, files):
    pair = leaf(ca)
    cert, key = files(pair, cert_pem=pair.cert_pem + ca.cert_pem.bytes())
    tls.build_context(cert, key)


def _no_key_material(text: str, pair: Pair) -> bool:
    body = b"".join(pair.key_pem.splitlines()[1:-1]).decode()
    return "PRIVATE KEY" not in text and body[:40] not in text and body[-40:] not in text


# ---- reload --------------------------------------------------------------------------------------

@BOTH_LOOPS
async def test_reload_serves_the_new_certificate_to_new_connections_only(ca, files):
    old, new = leaf(ca), leaf(ca)
    reloader = tls.CertificateReloader(*files(old))
    listener_context = reloader.context
    async with tls_server(reloader.context) as port:
        async with connect(port, client_context(ca, alpn=["h2", "http/1.1"])) as before:
            assert before.serial == old.serial
            assert await before.echo(b"one\n") == b"one\n"
            files(new)
            assert reloader.reload() is True
            assert reloader.context is listener_context
            assert reloader.certificate.serial_number == new.serial
            async with connect(port, client_context(ca, alpn=["h2", "http/1.1"])) as after:
                assert after.serial == new.serial
                assert after.tls.selected_alpn_protocol() == "h2"
                assert await after.echo(b"two\n") == b"two\n"
            # clients that send no SNI (connecting by IP address) switch over too
            no_sni = client_context(ca)
            no_sni.check_hostname = False
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=no_sni)
            by_ip = Client(reader, writer)  # Python sends no SNI for an IP address
            try:
                assert by_ip.serial == new.serial
            finally:
                await by_ip.close()
            # the connection from before the reload is still up, on its old certificate
            assert await before.echo(b"three\n") == b"three\n"
            assert before.serial == old.serial


@BOTH_LOOPS
@pytest.mark.parametrize("broken", ["mismatched key", "expired", "missing key"])
async def test_failed_reload_keeps_the_old_certificate(ca, files, caplog, broken):
    old = leaf(ca)
    cert, key = files(old)
    reloader = tls.CertificateReloader(cert, key)
    if broken == "mismatched key":
        bad = leaf(ca)
        files(Pair(bad.cert_pem, leaf(ca).key_pem, bad.serial))
    elif broken == "expired":
        bad = leaf(ca, not_before=NOW - 100 * DAY, not_after=NOW - DAY)
        files(bad)
    else:
        bad = leaf(ca)
        files(bad)
        key.unlink()
    async with tls_server(reloader.context) as port:
        with caplog.at_level(logging.ERROR, logger="kraken.tls"):
            assert reloader.reload() is False
        assert "reload failed" in caplog.text
        assert _no_key_material(caplog.text, old) and _no_key_material(caplog.text, bad)
        assert reloader.certificate.serial_number == old.serial
        async with connect(port, client_context(ca)) as client:
            assert client.serial == old.serial
            assert await client.echo() == b"ping\n"
        # fixed files load on the next reload
        fixed = leaf(ca)
        files(fixed)
        assert reloader.reload() is True
        async with connect(port, client_context(ca)) as client:
            assert client.serial == fixed.serial


async def test_handshakes_during_many_reloads_all_succeed(ca, files):
    """Reloads racing handshakes: every connection gets one of the certificates, whole."""
    pairs = [leaf(ca) for _ in range(4)]
    reloader = tls.CertificateReloader(*files(pairs[0]))
    serials = {p.serial for p in pairs}
    async with tls_server(reloader.context) as port:
        async def one() -> int:
            async with connect(port, client_context(ca)) as client:
                assert await client.echo() == b"ping\n"
                return client.serial

        seen = set()
        for pair in pairs[1:]:
            tasks = [asyncio.create_task(one()) for _ in range(10)]
            await asyncio.sleep(0)
            files(pair)
            assert reloader.reload()
            seen.update(await asyncio.gather(*tasks))
        assert seen <= serials
        assert await one() == pairs[-1].serial


def test_reloader_refuses_to_start_with_a_broken_pair(ca, files):
    cert, key = files(leaf(ca, not_before=NOW - 100 * DAY, not_after=NOW - DAY))
    with pytest.raises(tls.TLSConfigError, match="expired"):
        tls.CertificateReloader(cert, key)


def test_expiring_certificate_logs_a_warning(ca, files, caplog):
    with caplog.at_level(logging.INFO, logger="kraken.tls"):
        tls.CertificateReloader(*files(leaf(ca, not_after=NOW + 3 * DAY)))
    (record,) = [r for r in caplog.records if r.name == "kraken.tls"]
    assert record.levelno == logging.WARNING and "expires" in record.getMessage()


# ---- HSTS ----------------------------------------------------------------------------------------

def test_hsts_header():
    assert tls.hsts_header() == (b"strict-transport-security", b"max-age=31536000")
    assert tls.hsts_value(63072000, include_subdomains=True) == \
        b"max-age=63072000; includeSubDomains"
    assert tls.hsts_value(63072000, include_subdomains=True, preload=True) == \
        b"max-age=63072000; includeSubDomains; preload"
    with pytest.raises(ValueError):
        tls.hsts_value(300, include_subdomains=True, preload=True)
    with pytest.raises(ValueError):
        tls.hsts_value(31536000, preload=True)


# ---- sslyze --------------------------------------------------------------------------------------

def _sslyze() -> list[str]:
    """sslyze pins cryptography<47, so tools/test installs it in its own venv
    (``.venv-sslyze`` at the repository root); $KRAKEN_SSLYZE, an sslyze importable here or
    one on PATH work too."""
    if os.environ.get("KRAKEN_SSLYZE"):
        return [os.environ["KRAKEN_SSLYZE"]]
    beside = Path(__file__).resolve().parents[2] / ".venv-sslyze" / "bin" / "sslyze"
    if beside.exists():
        return [str(beside)]
    with contextlib.suppress(ImportError):
        import sslyze  # noqa: F401
        return [sys.executable, "-m", "sslyze"]
    found = shutil.which("sslyze")
    if found:
        return [found]
    pytest.fail("sslyze not found: run tools/test (it installs sslyze into .venv-sslyze and sets"
                " KRAKEN_SSLYZE), or set KRAKEN_SSLYZE to an sslyze executable")


async def _run_sslyze(port: int, ca_file: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *_sslyze(), "--mozilla_config=intermediate", f"--certinfo_ca_file={ca_file}",
        f"localhost:{port}{{127.0.0.1}}",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    return proc.returncode, out.decode(errors="replace")


async def test_sslyze_finds_the_mozilla_intermediate_profile(ca, files, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = tls.CertificateReloader(*files(leaf(ca))).context
    async with tls_server(context) as port:
        code, out = await _run_sslyze(port, ca_file)
    assert "OK - Compliant." in out and code == 0, out


async def test_sslyze_flags_python_default_server_context(ca, files, tmp_path):
    """The check above is not vacuous: Python's default server context is not compliant."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*files(leaf(ca)))
    async with tls_server(context) as port:
        code, out = await _run_sslyze(port, ca_file)
    assert "FAILED - Not compliant." in out and code != 0, out
