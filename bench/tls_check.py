"""TLS checks and measurements for Kraken's listener.

    .venv/bin/python bench/tls_check.py local [--handshakes 300]
        Local server on uvloop with throwaway certificates: handshake latency with a plain
        context, with CertificateReloader before any reload, and after a reload (every
        handshake then switches context in the SNI callback), plus the time reload() takes.

    .venv/bin/python bench/tls_check.py remote HOST:PORT [--sni NAME] [--ca FILE]
        What a deployed listener offers: protocol, cipher, ALPN, certificate serial and days
        to expiry, whether TLS 1.0/1.1 and a CBC suite are refused, and the HSTS header.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import socket
import ssl
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# ---- local -----------------------------------------------------------------------------------

async def _handshakes(port: int, client: ssl.SSLContext, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                  server_hostname="localhost")
        out.append(time.perf_counter() - t0)
        writer.close()
        await writer.wait_closed()
    return out


async def _local(n: int) -> None:
    import trustme

    from kraken.http import tls

    ca = trustme.CA()
    tmp = Path(tempfile.mkdtemp(prefix="kraken-tls-"))

    def install(leaf: trustme.LeafCert) -> tuple[Path, Path]:
        (tmp / "fullchain.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
        (tmp / "privkey.pem").write_bytes(leaf.private_key_pem.bytes())
        return tmp / "fullchain.pem", tmp / "privkey.pem"

    paths = install(ca.issue_cert("localhost"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2", "http/1.1"])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    reloader = tls.CertificateReloader(*paths)
    plain = tls.build_context(*paths)
    rows = []
    for label, ctx, reload_first in (("build_context", plain, False),
                                     ("reloader, no reload yet", reloader.context, False),
                                     ("reloader after reload", reloader.context, True)):
        if reload_first:
            install(ca.issue_cert("localhost"))
            t0 = time.perf_counter()
            assert reloader.reload()
            rows.append(("reload() itself", [time.perf_counter() - t0]))
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        await _handshakes(port, client, 20)  # warm-up
        rows.append((label, await _handshakes(port, client, n)))
        server.close()
        await server.wait_closed()
    print(f"TLS 1.3 handshakes on uvloop, client and server in one process, n={n}")
    for label, samples in rows:
        samples.sort()
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(f"  {label:26s} p50 {statistics.median(samples) * 1e3:7.3f} ms"
              f"   p99 {p99 * 1e3:7.3f} ms")


# ---- remote ----------------------------------------------------------------------------------

def _try(host: str, port: int, sni: str, ctx: ssl.SSLContext) -> ssl.SSLSocket | str:
    try:
        raw = socket.create_connection((host, port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname=sni)
    except (OSError, ssl.SSLError) as exc:
        return f"refused ({type(exc).__name__}: {exc})"


def _client(ca: str | None, *, version: ssl.TLSVersion | None = None,
            ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if version is not None:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
    if ciphers is not None:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    return ctx


def _remote(target: str, sni: str | None, ca: str | None) -> int:
    from cryptography import x509

    host, _, port_text = target.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    sni = sni or host
    ctx = _client(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    conn = _try(host, port, sni, ctx)
    if isinstance(conn, str):
        print(f"handshake: {conn}")
        return 1
    cert = x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    print(f"handshake: {conn.version()} {conn.cipher()[0]} alpn={conn.selected_alpn_protocol()}")
    print(f"certificate: serial {cert.serial_number:x}, expires {cert.not_valid_after_utc:%Y-%m-%d}"
          f" ({left.days} days)")
    conn.close()
    h1 = _client(ca)
    h1.set_alpn_protocols(["http/1.1"])
    conn = _try(host, port, sni, h1)
    if not isinstance(conn, str):
        conn.sendall(f"GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
        conn.close()
        hsts = [line for line in head.split(b"\r\n")
                if line.lower().startswith(b"strict-transport-security:")]
        print(f"hsts: {hsts[0].decode() if hsts else 'absent'}")
    bad = 0
    for label, probe in (("TLS 1.0", _client(ca, version=ssl.TLSVersion.TLSv1)),
                         ("TLS 1.1", _client(ca, version=ssl.TLSVersion.TLSv1_1)),
                         ("TLS 1.2 CBC", _client(ca, ciphers="ECDHE-ECDSA-AES128-SHA256:"
                                                             "ECDHE-RSA-AES128-SHA256"))):
        result = _try(host, port, sni, probe)
        if isinstance(result, str):
            print(f"{label}: {result}")
        else:
            print(f"{label}: ACCEPTED ({result.version()} {result.cipher()[0]})")
            result.close()
            bad += 1
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    local = sub.add_parser("local")
    local.add_argument("--handshakes", type=int, default=300)
    remote = sub.add_parser("remote")
    remote.add_argument("target", help="HOST:PORT")
    remote.add_argument("--sni")
    remote.add_argument("--ca", help="CA bundle to verify with (default: system)")
    args = parser.parse_args()
    if args.mode == "local":
        import uvloop

        uvloop.run(_local(args.handshakes))
        return 0
    return _remote(args.target, args.sni, args.ca)


if __name__ == "__main__":
    sys.exit(main())
