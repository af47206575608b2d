"""systemd integration: the unit file passes ``systemd-analyze verify`` and keeps its
hardening, the tmpfiles.d entries create what they promise, and ``kraken.sdnotify`` speaks
the notify protocol to a real AF_UNIX datagram socket."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kraken import sdnotify
from kraken.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "kraken.service"
TMPFILES = ROOT / "systemd" / "kraken.tmpfiles.conf"
SHIPPED_EXEC_START = "/opt/kraken/.venv/bin/kraken"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: tools/test installs it (Debian package 'systemd')")
    return path


def _unit_settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` → values (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _testable_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with only ExecStart's binary swapped for one that exists here (verify
    checks that it is executable)."""
    text = UNIT.read_text() if text is None else text
    kraken_bin = Path(sys.executable).with_name("kraken")
    assert kraken_bin.exists(), kraken_bin
    assert text.count(f"ExecStart={SHIPPED_EXEC_START} ") == 1
    copy = tmp_path / "kraken.service"
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC_START} ", f"ExecStart={kraken_bin} "))
    return copy


def _verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("systemd-analyze"), "verify", str(unit)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


# ---- the unit file -------------------------------------------------------------------------------

def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit = _testable_copy(tmp_path)
    result = _verify(unit)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "kraken.service" in line or str(tmp_path) in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []


def test_verify_would_catch_a_misspelt_setting(tmp_path):
    """verify exits 0 on unknown keys and only warns: the test above must read the output."""
    text = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict")
    result = _verify(_testable_copy(tmp_path, text))
    assert "Unknown key" in result.stdout + result.stderr


def test_unit_exposure_level_stays_low(tmp_path):
    """``systemd-analyze security`` scores 0 (locked down) to 10; this unit is 1.4 on 252."""
    unit = _testable_copy(tmp_path)
    result = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for kraken\.service: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


def test_unit_runs_kraken_as_a_notify_service_that_reloads_on_sighup():
    unit = _unit_settings(UNIT.read_text())
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.ExecStart"] == [
        f"{SHIPPED_EXEC_START} serve --config /etc/kraken/kraken.toml"]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_stop_timeout_outlasts_the_drain():
    """SIGKILL must not cut the drain: drain deadline + 5 s abort wait + flush margin."""
    unit = _unit_settings(UNIT.read_text())
    (stop,) = unit["Service.TimeoutStopSec"]
    assert int(stop) >= ServerConfig().drain_timeout_s + 10


def test_unit_runs_unprivileged_and_hardened():
    unit = _unit_settings(UNIT.read_text())
    expected = {
        "User": "kraken", "Group": "kraken", "StateDirectory": "kraken",
        "WorkingDirectory": "/var/lib/kraken", "LimitNOFILE": "65536",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "NoNewPrivileges": "yes",
        "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/kraken", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "LockPersonality": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native",
        "SystemCallErrorNumber": "EPERM",
    }
    for key, value in expected.items():
        assert unit.get(f"Service.{key}") == [value], key
    assert "@system-service" in unit["Service.SystemCallFilter"]
    # cffi callbacks need W+X memory: see the comment in the unit
    assert "Service.MemoryDenyWriteExecute" not in unit


def test_tmpfiles_create_the_tls_and_acme_directories(tmp_path):
    """Applied to a scratch root that has a ``kraken`` group, as sysusers/useradd make it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nkraken:x:987:\n")
    result = subprocess.run(
        [_tool("systemd-tmpfiles"), "--create", f"--root={root}", str(TMPFILES)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for path in ("etc/kraken", "etc/kraken/tls", "var/lib/kraken-acme"):
        st = (root / path).stat()
        assert (oct(st.st_mode & 0o7777), st.st_gid) == ("0o750", 987), path
        if os.geteuid() == 0:
            assert st.st_uid == 0, path


# ---- sd_notify ----------------------------------------------------------------------------------

@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A manager-side socket at a path; NOTIFY_SOCKET points at it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


def test_ready_is_sent_to_the_notify_socket(notify_socket):
    assert sdnotify.notify("READY=1") is True
    assert notify_socket.recv(4096) == b"READY=1"


def test_stopping_and_ready_with_status(notify_socket):
    assert sdnotify.stopping("draining 3 connections")
    assert _fields(notify_socket.recv(4096)) == {"STOPPING": "1",
                                                 "STATUS": "draining 3 connections"}
    assert sdnotify.ready("listening on :443\nsecond line")
    assert _fields(notify_socket.recv(4096)) == {"READY": "1",
                                                 "STATUS": "listening on :443 second line"}
    assert sdnotify.status("ok")
    assert notify_socket.recv(4096) == b"STATUS=ok"


def test_reloading_carries_monotonic_usec(notify_socket):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = _fields(notify_socket.recv(4096))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_abstract_namespace_socket(monkeypatch):
    name = f"kraken-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


def test_explicit_env_mapping_wins_over_the_process_environment(notify_socket, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.ready() is False
    path = notify_socket.getsockname()
    assert sdnotify.ready(env={"NOTIFY_SOCKET": path}) is True
    assert notify_socket.recv(4096) == b"READY=1"


@pytest.mark.parametrize("value", [None, "", "relative/path", "vsock:2:1234"])
def test_no_usable_notify_socket_is_a_quiet_no_op(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert sdnotify.notify("READY=1") is False


def test_dead_notify_socket_returns_false_without_raising(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sdnotify.ready() is False
    assert "sd_notify" in caplog.text
