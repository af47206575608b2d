"""certbot integration: the deploy hook on fake lineages, and the whole renewal path end to
end: certbot (webroot) ↔ a local ACME CA (pebble) ↔ Kraken's plain-HTTP ACME handler, then the
deploy hook installs the pair and Kraken's certificate reloader picks it up."""
from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "certbot" / "deploy-hook.sh"
EXAMPLE = ROOT / "certbot" / "renewal-example.conf"
CHECK_CMD = f"{sys.executable} -m kraken.http.tls"


# ---- fixtures: a lineage, Kraken's TLS directory, a reload recorder ------------------------------

def _other_group() -> str:
    """A group the hook can chown to: not our primary one when we are root, to see it apply."""
    if os.geteuid() == 0:
        for name in ("daemon", "nogroup", "adm"):
            with contextlib.suppress(KeyError):
                return grp.getgrnam(name).gr_name
    return grp.getgrgid(os.getegid()).gr_name


def _lineage(base: Path, leaf: trustme.LeafCert, n: int = 1) -> Path:
    """certbot's layout: live/<name>/*.pem are symlinks into archive/<name>/*N.pem."""
    archive, live = base / "archive" / "api.example.com", base / "live" / "api.example.com"
    archive.mkdir(parents=True, exist_ok=True)
    live.mkdir(parents=True, exist_ok=True)
    (archive / f"fullchain{n}.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (archive / f"privkey{n}.pem").write_bytes(leaf.private_key_pem.bytes())
    for name in ("fullchain", "privkey"):
        link = live / f"{name}.pem"
        link.unlink(missing_ok=True)
        link.symlink_to(Path("..", "..", "archive", "api.example.com", f"{name}{n}.pem"))
    return live


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tls_dir = tmp_path / "kraken-tls"
    tls_dir.mkdir()
    recorder = tmp_path / "reload.sh"
    recorder.write_text(f'#!/bin/sh\necho reloaded >> "{tmp_path / "reloads"}"\n')
    recorder.chmod(0o755)
    return {
        **os.environ,
        "KRAKEN_TLS_DIR": str(tls_dir),
        "KRAKEN_OWNER": pwd.getpwuid(os.geteuid()).pw_name,
        "KRAKEN_GROUP": _other_group(),
        "KRAKEN_CHECK_CMD": CHECK_CMD,
        "KRAKEN_RELOAD_CMD": str(recorder),
    }


def _reloads(tmp_path: Path) -> int:
    marker = tmp_path / "reloads"
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def _run_hook(env: dict[str, str], lineage: Path | None) -> subprocess.CompletedProcess:
    env = dict(env)
    env.pop("RENEWED_LINEAGE", None)
    if lineage is not None:
        env["RENEWED_LINEAGE"] = str(lineage)
    return subprocess.run([str(HOOK)], env=env, capture_output=True, text=True, timeout=60)


def _installed(env: dict[str, str]) -> tuple[Path, Path]:
    tls_dir = Path(env["KRAKEN_TLS_DIR"])
    return tls_dir / "fullchain.pem", tls_dir / "privkey.pem"


def _snapshot(env: dict[str, str]) -> list[tuple[str, bytes, int, int]]:
    out = []
    for path in sorted(Path(env["KRAKEN_TLS_DIR"]).iterdir()):
        st = path.stat()
        out.append((path.name, path.read_bytes(), st.st_ino, st.st_mtime_ns))
    return out


# ---- the deploy hook on fake lineages ------------------------------------------------------------

def test_hook_is_an_executable_posix_shell_script():
    assert os.access(HOOK, os.X_OK)
    assert HOOK.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["dash", "-n", str(HOOK)], check=True)


def test_hook_passes_shellcheck():
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.fail("shellcheck not found: tools/test installs it (Debian package 'shellcheck')")
    result = subprocess.run([tool, "--shell=sh", str(HOOK)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_hook_installs_the_pair_with_modes_and_reloads(tmp_path, ca, env):
    leaf = ca.issue_cert("api.example.com")
    lineage = _lineage(tmp_path / "le", leaf)
    result = _run_hook(env, lineage)
    assert result.returncode == 0, result.stderr
    cert, key = _installed(env)
    assert cert.read_bytes() == (lineage / "fullchain.pem").read_bytes()
    assert key.read_bytes() == (lineage / "privkey.pem").read_bytes()
    assert not cert.is_symlink() and not key.is_symlink()
    group = grp.getgrnam(env["KRAKEN_GROUP"]).gr_gid
    owner = pwd.getpwnam(env["KRAKEN_OWNER"]).pw_uid
    for path, mode in ((cert, 0o644), (key, 0o640)):
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, owner, group), path
    assert sorted(p.name for p in cert.parent.iterdir()) == ["fullchain.pem", "privkey.pem"]
    assert _reloads(tmp_path) == 1


def test_hook_replaces_installed_files_by_rename(tmp_path, ca, env):
    """A reader that opened the old file keeps reading the old bytes: nothing is rewritten
    in place, so Kraken can never load half a file."""
    _run_hook(env, _lineage(tmp_path / "le", ca.issue_cert("api.example.com")))
    cert, key = _installed(env)
    old_bytes = cert.read_bytes()
    with cert.open("rb") as held:
        new_lineage = _lineage(tmp_path / "le", ca.issue_cert("api.example.com"), n=2)
        result = _run_hook(env, new_lineage)
        assert result.returncode == 0, result.stderr
        assert held.read() == old_bytes
    assert cert.read_bytes() == (new_lineage / "fullchain.pem").read_bytes() != old_bytes
    assert key.read_bytes() == (new_lineage / "privkey.pem").read_bytes()
    assert _reloads(tmp_path) == 2


@pytest.mark.parametrize("damage", ["no fullchain", "no privkey", "empty privkey",
                                    "dangling symlink", "no lineage dir"])
def test_missing_lineage_file_fails_without_touching_installed_files(tmp_path, ca, env, damage):
    _run_hook(env, _lineage(tmp_path / "le", ca.issue_cert("api.example.com")))
    before = _snapshot(env)
    lineage = _lineage(tmp_path / "le2", ca.issue_cert("api.example.com"))
    if damage == "no fullchain":
        (lineage / "fullchain.pem").unlink()
    elif damage == "no privkey":
        (lineage / "privkey.pem").unlink()
    elif damage == "empty privkey":
        (lineage / "privkey.pem").resolve().write_bytes(b"")
    elif damage == "dangling symlink":
        (lineage / "privkey.pem").resolve().unlink()
    else:
        lineage = tmp_path / "nowhere"
    result = _run_hook(env, lineage)
    assert result.returncode != 0
    assert "kraken deploy hook:" in result.stderr
    assert _snapshot(env) == before
    assert _reloads(tmp_path) == 1


@pytest.mark.parametrize("broken", ["mismatched key", "expired"])
def test_hook_refuses_a_pair_kraken_would_refuse(tmp_path, ca, env, broken):
    import datetime as dt

    _run_hook(env, _lineage(tmp_path / "le", ca.issue_cert("api.example.com")))
    before = _snapshot(env)
    if broken == "mismatched key":
        lineage = _lineage(tmp_path / "le2", ca.issue_cert("api.example.com"))
        other = ca.issue_cert("api.example.com")
        (lineage / "privkey.pem").resolve().write_bytes(other.private_key_pem.bytes())
    else:
        now = dt.datetime.now(dt.timezone.utc)
        expired = ca.issue_cert("api.example.com", not_before=now - dt.timedelta(days=100),
                                not_after=now - dt.timedelta(days=1))
        lineage = _lineage(tmp_path / "le2", expired)
    result = _run_hook(env, lineage)
    assert result.returncode != 0
    assert "nothing installed" in result.stderr
    assert ("does not match" if broken == "mismatched key" else "expired") in result.stderr
    assert _snapshot(env) == before
    assert _reloads(tmp_path) == 1


def test_hook_without_renewed_lineage_fails(env):
    result = _run_hook(env, None)
    assert result.returncode != 0 and "RENEWED_LINEAGE" in result.stderr
    assert _snapshot(env) == []


def test_hook_reports_a_failed_reload(tmp_path, ca, env):
    result = _run_hook({**env, "KRAKEN_RELOAD_CMD": "exit 3"},
                       _lineage(tmp_path / "le", ca.issue_cert("api.example.com")))
    assert result.returncode != 0 and "reload command failed" in result.stderr
    assert [p.name for p in sorted(Path(env["KRAKEN_TLS_DIR"]).iterdir())] == \
        ["fullchain.pem", "privkey.pem"]


def test_hook_with_a_missing_checker_installs_nothing(tmp_path, ca, env):
    result = _run_hook({**env, "KRAKEN_CHECK_CMD": str(tmp_path / "no-python") + " -m x"},
                       _lineage(tmp_path / "le", ca.issue_cert("api.example.com")))
    assert result.returncode != 0 and "checker" in result.stderr and "not found" in result.stderr
    assert _snapshot(env) == [] and _reloads(tmp_path) == 0


def test_hook_check_can_be_switched_off(tmp_path, ca, env):
    result = _run_hook({**env, "KRAKEN_CHECK_CMD": ""},
                       _lineage(tmp_path / "le", ca.issue_cert("api.example.com")))
    assert result.returncode == 0, result.stderr


# ---- the renewal config --------------------------------------------------------------------------

def _renewal_params(text: str) -> dict[str, str]:
    section, out = "", {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out[f"{section}.{key.strip()}" if section else key.strip()] = value.strip()
    return out


def test_renewal_example_uses_webroot_on_the_acme_dir_and_the_deploy_hook():
    conf = _renewal_params(EXAMPLE.read_text())
    assert conf["renewalparams.authenticator"] == "webroot"
    assert conf["renewalparams.webroot_path"] == "/var/lib/kraken-acme,"
    assert conf["webroot_map.api.example.com"] == "/var/lib/kraken-acme"
    assert conf["renewalparams.renew_hook"] == "/opt/kraken/certbot/deploy-hook.sh"
    assert not any("staple" in key for key in conf)
    assert "OCSP" in EXAMPLE.read_text()


# ---- end to end: certbot + pebble + Kraken's ACME handler + hook + reloader ----------------------

def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: tools/test installs it (Debian package '{package}')")
    return path


@contextlib.asynccontextmanager
async def _daemon(*argv: str, env: dict[str, str], log: Path, ready: str):
    """Run a helper process until ``ready`` appears in its output."""
    out = log.open("wb")
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=out,
                                                stderr=subprocess.STDOUT)
    try:
        async with asyncio.timeout(20):
            while ready not in log.read_text(errors="replace"):
                if proc.returncode is not None:
                    raise AssertionError(f"{argv[0]} exited: {log.read_text()}")
                await asyncio.sleep(0.05)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 10)
        out.close()


async def _certbot(*args: str, work: Path, env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        _need("certbot", "certbot"), *args, "--config-dir", str(work / "le"),
        "--work-dir", str(work / "le-work"), "--logs-dir", str(work / "le-logs"),
        "--non-interactive", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text + (work / "le-logs" / "letsencrypt.log").read_text()
    return text


@contextlib.asynccontextmanager
async def serve_plain(acme_dir: str, port: int):
    """Kraken's plain-HTTP listener as app.py runs it: H1Connection + plain_http_handler.
    Yields the list of request paths it answered."""
    from kraken.config import ServerConfig
    from kraken.http.acme import plain_http_handler
    from kraken.http.h1 import H1Connection

    handler, paths, conns = plain_http_handler(acme_dir, 443), [], set()

    async def recording(request, sink):
        paths.append(request.path)
        await handler(request, sink)

    listener = await asyncio.get_running_loop().create_server(
        lambda: H1Connection(recording, ServerConfig(), conns), "127.0.0.1", port)
    try:
        yield paths
    finally:
        listener.close()
        for conn in list(conns):
            conn.abort()
        await listener.wait_closed()
        await asyncio.sleep(0)


async def _renew_until_validated(requests: list[str], pebble_log: Path, *, work: Path,
                                 env: dict[str, str]) -> int:
    """Force renewals until pebble validates one over HTTP-01; returns how many ran.

    PEBBLE_AUTHZREUSE=0 still reuses a valid authorization 1 time in 100 (pebble's check is
    ``rand.Intn(100) > percent``), and a reused authorization needs no challenge. Its log
    tells the two apart: a renewal that logged no validation attempt was such a reuse and
    is run again; one that attempted validation must have fetched the challenge from Kraken.
    """
    for renewals in range(1, 4):
        attempts = pebble_log.read_text().count("Attempting to validate")
        requests.clear()
        await _certbot("renew", "--force-renewal", "--no-random-sleep-on-renew",
                       work=work, env=env)
        if pebble_log.read_text().count("Attempting to validate") > attempts:
            return renewals
    raise AssertionError("pebble reused the authorization on three renewals in a row")


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


@pytest.mark.anyio
async def test_certbot_renewal_through_kraken_end_to_end(tmp_path, ca, env):
    pebble = _need("pebble", "pebble")
    challtestsrv = _need("pebble-challtestsrv", "pebble")
    domain = "api.kraken.test"
    acme_dir = tmp_path / "acme"
    acme_dir.mkdir()
    http_port, acme_port, mgmt_port = _free_port(), _free_port(), _free_port()
    dns_port = _free_port(socket.SOCK_DGRAM)

    # pebble's own HTTPS endpoint, trusted by certbot through REQUESTS_CA_BUNDLE
    pebble_tls = ca.issue_cert("127.0.0.1", "localhost")
    pebble_tls.cert_chain_pems[0].write_to_path(str(tmp_path / "pebble-cert.pem"))
    pebble_tls.private_key_pem.write_to_path(str(tmp_path / "pebble-key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "pebble-ca.pem"))
    (tmp_path / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(tmp_path / "pebble-cert.pem"),
        "privateKey": str(tmp_path / "pebble-key.pem"),
        "httpPort": http_port, "tlsPort": _free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    daemon_env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
                  "PEBBLE_AUTHZREUSE": "0"}
    certbot_env = {**env, "REQUESTS_CA_BUNDLE": str(tmp_path / "pebble-ca.pem")}
    server = f"https://127.0.0.1:{acme_port}/dir"

    async with _daemon(challtestsrv, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                       "-http01", "", "-https01", "", "-tlsalpn01", "",
                       "-dns01", f"127.0.0.1:{dns_port}",
                       "-management", f"127.0.0.1:{_free_port()}",
                       env=daemon_env, log=tmp_path / "challtestsrv.log",
                       ready="Starting management server"), \
            _daemon(pebble, "-config", str(tmp_path / "pebble.json"),
                    "-dnsserver", f"127.0.0.1:{dns_port}",
                    env=daemon_env, log=tmp_path / "pebble.log", ready="Listening on"), \
            serve_plain(str(acme_dir), http_port) as requests:
        # first issuance: certbot writes the challenge into acme_dir, pebble fetches it from
        # Kraken's handler, the deploy hook installs the pair
        await _certbot("certonly", "--webroot", "-w", str(acme_dir), "-d", domain,
                       "--server", server, "--agree-tos", "--register-unsafely-without-email",
                       "--deploy-hook", str(HOOK), work=tmp_path, env=certbot_env)
        assert any(p.startswith("/.well-known/acme-challenge/") for p in requests)
        cert, key = _installed(env)
        lineage = tmp_path / "le" / "live" / domain
        assert cert.read_bytes() == (lineage / "fullchain.pem").read_bytes()
        assert _reloads(tmp_path) == 1

        from kraken.http import tls

        reloader = tls.CertificateReloader(cert, key)
        first = reloader.certificate.serial_number
        assert first == _serial(lineage / "fullchain.pem")

        # renewal driven by certbot/renewal-example.conf, only names and paths swapped in
        written = _renewal_params((tmp_path / "le" / "renewal" / f"{domain}.conf").read_text())
        example = EXAMPLE.read_text()
        for old, new in (("/etc/letsencrypt", str(tmp_path / "le")),
                         ("api.example.com", domain),
                         ("0123456789abcdef0123456789abcdef", written["renewalparams.account"]),
                         ("https://acme-v02.api.letsencrypt.org/directory", server),
                         ("/var/lib/kraken-acme", str(acme_dir)),
                         ("/opt/kraken/certbot/deploy-hook.sh", str(HOOK))):
            assert old in example, old
            example = example.replace(old, new)
        (tmp_path / "le" / "renewal" / f"{domain}.conf").write_text(example)
        renewals = await _renew_until_validated(requests, tmp_path / "pebble.log",
                                                work=tmp_path, env=certbot_env)
        assert any(p.startswith("/.well-known/acme-challenge/") for p in requests)
        assert _reloads(tmp_path) == 1 + renewals
        assert cert.read_bytes() == (lineage / "fullchain.pem").read_bytes()
        assert stat.S_IMODE(key.stat().st_mode) == 0o640

        assert reloader.reload() is True
        assert reloader.certificate.serial_number == _serial(lineage / "fullchain.pem") != first
