"""Kraken's own listener over TLS: HSTS, ALPN, and SIGHUP certificate reload in a real process."""
from __future__ import annotations

import asyncio
import signal
import ssl

import anyio
import pytest
import trustme

from harness import KrakenProcess, free_port, kraken_mapping, running_kraken, running_mock, write_toml

pytestmark = pytest.mark.anyio


def issue(ca: trustme.CA, tmp_path, name: str) -> tuple[str, str, int]:
    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    from cryptography import x509

    serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
    return str(cert), str(key), serial


def client_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


async def get(port: int, ctx: ssl.SSLContext, path: str = "/healthz",
              conn: tuple | None = None) -> tuple[bytes, int, tuple]:
    """(response head+body, peer certificate serial, (reader, writer)) on a keep-alive connection."""
    if conn is None:
        conn = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    from cryptography import x509

    return head + body, x509.load_der_x509_certificate(der).serial_number, conn


async def test_tls_listener_sends_hsts_and_negotiates_h2(tmp_path):
    ca = trustme.CA()
    cert, key, _ = issue(ca, tmp_path, "a")
    async with running_mock() as mock:
        async with running_kraken(kraken_mapping(tmp_path, mock.port, tls={"cert": cert, "key": key})) as k:
            reply, _, (_, writer) = await get(k.port, client_context(ca))
            assert reply.startswith(b"HTTP/1.1 200")
            assert b"strict-transport-security: max-age=31536000" in reply.lower()
            writer.close()
            _, writer = await asyncio.open_connection("127.0.0.1", k.port, server_hostname="localhost",
                                                      ssl=client_context(ca, ["h2", "http/1.1"]))
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
            writer.close()


async def test_sighup_reloads_the_certificate_and_keeps_the_old_one_if_broken(tmp_path):
    ca = trustme.CA()
    cert, key, serial_a = issue(ca, tmp_path, "live")
    new_cert, new_key, serial_b = issue(ca, tmp_path, "next")
    _, other_key, _ = issue(ca, tmp_path, "other")
    async with running_mock() as mock:
        port = free_port()
        doc = kraken_mapping(tmp_path, mock.port, server={"port": port}, tls={"cert": cert, "key": key})
        write_toml(tmp_path / "k.toml", doc)
        kp = KrakenProcess(tmp_path / "k.toml", port, tmp_path / "k.log", tls=client_context(ca))
        await anyio.to_thread.run_sync(kp.start)
        ctx = client_context(ca)
        try:
            _, serial, old_conn = await get(port, ctx)
            assert serial == serial_a
            # certbot's deploy hook replaces the files, then systemd sends SIGHUP
            (tmp_path / "live.crt").write_bytes((tmp_path / "next.crt").read_bytes())
            (tmp_path / "live.key").write_bytes((tmp_path / "next.key").read_bytes())
            kp.signal(signal.SIGHUP)
            with anyio.fail_after(10):
                while (await get(port, ctx))[1] != serial_b:
                    await asyncio.sleep(0.02)
            reply, serial, _ = await get(port, ctx, conn=old_conn)  # in-flight connection lives on
            assert reply.startswith(b"HTTP/1.1 200") and serial == serial_a
            # a broken pair (key of another certificate): the working one stays in service
            (tmp_path / "live.key").write_bytes((tmp_path / "other.key").read_bytes())
            kp.signal(signal.SIGHUP)
            with anyio.fail_after(10):
                while b"reload failed, keeping serial" not in (tmp_path / "k.log").read_bytes():
                    await asyncio.sleep(0.02)
            assert (await get(port, ctx))[1] == serial_b
            kp.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(kp.wait) == 0
        finally:
            kp.kill()
