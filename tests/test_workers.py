"""``[server] workers = N``: a supervisor and N real ``kraken serve`` processes on one port
(SO_REUSEPORT), sharing one SQLite file, each with its own crash-journal directory.

The supervisor's sd_notify messages go to a socket the test owns, standing in for systemd;
which processes exist and which sockets they hold is read from /proc."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import anyio
import h11
import pytest
import trustme

from harness import auth_headers, free_port, http, kraken_mapping, running_mock, write_toml
from kraken import config, workers

pytestmark = pytest.mark.anyio

TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"


class Supervised:
    """``kraken serve`` with workers > 1 as a subprocess; its NOTIFY_SOCKET is ours."""

    def __init__(self, tmp_path: Path, doc: dict) -> None:
        self.tmp = tmp_path
        self.port = doc["server"]["port"]
        self.db = Path(doc["store"]["path"])
        self.log = tmp_path / "kraken.log"
        write_toml(tmp_path / "kraken.toml", doc)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify"))
        self.messages: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.seen: set[int] = set()  # every worker pid observed, for cleanup

    def start(self, timeout: float = 15.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": str(self.tmp / "notify")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kraken", "serve", "--config", str(self.tmp / "kraken.toml")],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        self.expect("READY=1", timeout)

    def expect(self, state: str, timeout: float = 10.0, after: int = 0) -> int:
        """Wait (bounded) for a notify message with line ``state``; returns its position."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None  # before reading: its last messages are queued
            self.notify.settimeout(0 if exited else 0.2)
            with contextlib.suppress(TimeoutError, BlockingIOError):
                for _ in range(100):
                    self.messages.append(self.notify.recv(4096).decode())
            for i, message in enumerate(self.messages[after:], after):
                if state in message.splitlines():
                    return i
            if exited or time.monotonic() >= deadline:
                raise AssertionError(f"no {state} (got {self.messages}): {self.log.read_text()[-3000:]}")

    def children(self) -> set[int]:
        pids = children_of(self.proc.pid)
        self.seen |= pids
        return pids

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Cleanup: SIGKILL what is left of the supervisor and the workers we saw."""
        if self.proc is not None and self.proc.poll() is None:
            self.seen |= children_of(self.proc.pid)
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.notify.close()


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc/*/stat."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            out.add(int(entry))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def socket_inodes(pid: int) -> set[int]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    return out


def tcp_inodes(port: int, state: str) -> set[int]:
    """Inodes of TCP sockets whose local port is ``port``, in ``state`` (/proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            out.add(int(fields[9]))
    return out


def request_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM requests")]
    finally:
        conn.close()


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "kraken.db.journal").rglob("seg-*.jsonl"))


def chat(stream: bool, **mock) -> bytes:
    return json.dumps({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}],
                       "stream": stream, "mock": mock}).encode()


async def complete(port: int, n: int, concurrency: int = 10) -> list[str]:
    """``n`` chat requests (every other one streamed), each on a fresh connection."""
    ids: list[str] = []
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limit:
            reply = await http(port, "POST", "/v1/chat/completions", chat(i % 2 == 1), auth_headers())
        assert reply.status == 200, reply.body
        assert reply.body.endswith(b"data: [DONE]\n\n" if i % 2 else b"}")
        ids.append(reply.headers["x-request-id"])

    await asyncio.gather(*(one(i) for i in range(n)))
    return ids


def supervised(tmp_path: Path, mock_port: int, **sections) -> Supervised:
    sections["server"] = {"port": free_port(), "workers": 2, **sections.get("server", {})}
    return Supervised(tmp_path, kraken_mapping(tmp_path, mock_port, **sections))


async def test_two_workers_share_the_port_and_record_every_request_once(tmp_path):
    async with running_mock(chunks=5) as mock:
        sup = supervised(tmp_path, mock.port)
        try:
            await anyio.to_thread.run_sync(sup.start)
            kids = sup.children()
            assert len(kids) == 2
            # each worker holds its own listening socket on the one port
            listening = tcp_inodes(sup.port, TCP_LISTEN)
            held = [socket_inodes(pid) & listening for pid in kids]
            assert [len(h) for h in held] == [1, 1] and held[0] != held[1]
            assert socket_inodes(sup.proc.pid) & listening == set(), "the supervisor does not listen"
            # and the kernel spreads connections over both (all 40 on one: p = 2**-39)
            conns = []
            for _ in range(40):
                reader, writer = await asyncio.open_connection("127.0.0.1", sup.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200")
                conns.append(writer)
            established = tcp_inodes(sup.port, TCP_ESTABLISHED)
            served = sorted(len(socket_inodes(pid) & established) for pid in kids)
            assert sum(served) == 40 and served[0] > 0, served
            for writer in conns:
                writer.close()

            ids = await complete(sup.port, 120, concurrency=20)
            sup.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(sup.wait) == 0
        finally:
            sup.kill()
    stored = request_ids(sup.db)
    assert len(stored) == len(set(stored)) == 120 and set(stored) == set(ids)
    journal = tmp_path / "kraken.db.journal"
    assert sorted(p.name for p in journal.iterdir()) == ["worker-0", "worker-1"]
    assert segments(tmp_path) == [], "every worker flushed and trimmed its journal"


async def test_a_killed_worker_is_restarted_and_its_journal_replayed(tmp_path):
    """SIGKILL each worker in turn. A restarted slot replays only its own journal: had the
    first restart also replayed (and deleted) its live sibling's segment, the records the
    sibling appended afterwards would be lost when it is killed in turn."""
    async with running_mock(chunks=5) as mock:
        # nothing reaches SQLite before a kill: the records live in memory and journals
        sup = supervised(tmp_path, mock.port, meter={"flush_interval_ms": 60_000, "batch_max": 1000})
        completed: list[str] = []
        try:
            await anyio.to_thread.run_sync(sup.start)
            for victim in sorted(sup.children()):
                batch = await complete(sup.port, 30)
                completed += batch
                kids = sup.children()
                stored = set(request_ids(sup.db))
                os.kill(victim, signal.SIGKILL)
                with anyio.fail_after(10):
                    while len(new := sup.children() - kids) != 1 or victim in sup.children():
                        await asyncio.sleep(0.05)
                    (pid,) = new
                    while f"ready (pid {pid})" not in sup.log.read_text():
                        await asyncio.sleep(0.05)
                # the restarted slot replayed what the killed worker had journaled
                replayed = set(request_ids(sup.db)) - stored
                assert replayed and replayed <= set(completed)
            completed += await complete(sup.port, 30)
            sup.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(sup.wait) == 0
        finally:
            sup.kill()
    stored = request_ids(sup.db)
    assert len(stored) == len(set(stored)) and set(stored) == set(completed)
    assert segments(tmp_path) == []


async def test_sigterm_drains_the_in_flight_stream_and_every_process_exits(tmp_path):
    async with running_mock() as mock:
        sup = supervised(tmp_path, mock.port)
        try:
            await anyio.to_thread.run_sync(sup.start)
            kids = sup.children()
            pending = asyncio.ensure_future(http(sup.port, "POST", "/v1/chat/completions",
                                                 chat(True, chunks=40, chunk_delay_ms=25),
                                                 auth_headers()))
            with anyio.fail_after(5):  # the stream is in flight at the provider
                while not mock.requests:
                    await asyncio.sleep(0.01)
            sup.signal(signal.SIGTERM)
            reply = await pending
            assert reply.status == 200 and reply.body.endswith(b"data: [DONE]\n\n")
            assert await anyio.to_thread.run_sync(sup.wait) == 0
            await anyio.to_thread.run_sync(sup.expect, "STOPPING=1")
            assert not [pid for pid in kids if alive(pid)]
        finally:
            sup.kill()
    assert request_ids(sup.db) == [reply.headers["x-request-id"]]
    assert segments(tmp_path) == []


async def test_workers_of_a_sigkilled_supervisor_drain_and_exit(tmp_path):
    """No orphan keeps serving a port nobody supervises: each worker gets SIGTERM
    (PR_SET_PDEATHSIG) and drains, so its records are still flushed."""
    async with running_mock(chunks=5) as mock:
        sup = supervised(tmp_path, mock.port, meter={"flush_interval_ms": 60_000})
        try:
            await anyio.to_thread.run_sync(sup.start)
            kids = sup.children()
            ids = await complete(sup.port, 20)
            environ = Path(f"/proc/{min(kids)}/environ").read_bytes().split(b"\0")
            notify = next(v[14:].decode() for v in environ if v.startswith(b"NOTIFY_SOCKET="))
            sup.proc.kill()
            with anyio.fail_after(10):
                while [pid for pid in kids if alive(pid)]:
                    await asyncio.sleep(0.05)
        finally:
            sup.kill()
    shutil.rmtree(Path(notify).parent)  # the supervisor had no chance to remove it
    assert sorted(request_ids(sup.db)) == sorted(ids)
    assert segments(tmp_path) == []


async def test_supervisor_exits_75_when_a_worker_left_records_in_its_journal(tmp_path):
    """As one process does (README: exit 75, EX_TEMPFAIL): a store that cannot be written by
    the drain deadline leaves records in a worker's journal, and the service's exit status
    must say so, not look like a crash (1)."""
    async with running_mock(chunks=5) as mock:
        sup = supervised(tmp_path, mock.port, server={"drain_timeout_s": 0.5},
                         store={"busy_timeout_ms": 50}, meter={"flush_interval_ms": 60_000})
        try:
            await anyio.to_thread.run_sync(sup.start)
            ids = await complete(sup.port, 10)
            lock = sqlite3.connect(sup.db, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")  # the writers get SQLITE_BUSY until released
                sup.signal(signal.SIGTERM)
                code = await anyio.to_thread.run_sync(sup.wait)
            finally:
                lock.close()
        finally:
            sup.kill()
    assert code == 75, sup.log.read_text()[-3000:]
    assert segments(tmp_path), "the records stay in the journal, replayed at the next start"
    assert set(request_ids(sup.db)).isdisjoint(ids)


def issue(ca: trustme.CA, tmp_path: Path, name: str) -> tuple[Path, Path, int]:
    from cryptography import x509

    leaf = ca.issue_cert("localhost")
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key, x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


async def served_serial(port: int, ctx: ssl.SSLContext) -> int:
    from cryptography import x509

    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def test_sighup_reaches_every_worker_before_the_supervisor_reports_ready(tmp_path):
    ca = trustme.CA()
    cert, key, serial_a = issue(ca, tmp_path, "live")
    new_cert, new_key, serial_b = issue(ca, tmp_path, "next")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    async with running_mock() as mock:
        sup = supervised(tmp_path, mock.port, tls={"cert": str(cert), "key": str(key)})
        try:
            await anyio.to_thread.run_sync(sup.start)
            assert {await served_serial(sup.port, ctx) for _ in range(10)} == {serial_a}
            cert.write_bytes(new_cert.read_bytes())
            key.write_bytes(new_key.read_bytes())
            sup.signal(signal.SIGHUP)
            reloading = await anyio.to_thread.run_sync(sup.expect, "RELOADING=1")
            await anyio.to_thread.run_sync(sup.expect, "READY=1", 10.0, reloading + 1)
            # READY=1 again only once both workers reloaded: any new connection, either worker
            assert {await served_serial(sup.port, ctx) for _ in range(20)} == {serial_b}
            assert sup.log.read_text().count("TLS certificate reloaded") == 2
            sup.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(sup.wait) == 0
        finally:
            sup.kill()


def test_workers_must_be_at_least_one():
    with pytest.raises(config.ConfigError, match="server.workers must be at least 1"):
        config.from_mapping({"server": {"workers": 0}}, "k.toml", env={})


def test_each_worker_has_its_own_journal_dir_and_worker_0_adopts_orphans(tmp_path):
    """Recovery deletes what it replays, so only directories no live process writes to
    are adopted: the single-process one and slots beyond the current count."""
    base = tmp_path / "kraken.db.journal"
    for name in ("worker-0", "worker-1", "worker-2", "worker-3"):
        (base / name).mkdir(parents=True)
    two = config.from_mapping({"store": {"path": str(tmp_path / "kraken.db")},
                               "server": {"workers": 2}}, "k.toml", env={})
    assert workers.journal_dirs(two, 0) == (base / "worker-0", [base, base / "worker-2", base / "worker-3"])
    assert workers.journal_dirs(two, 1) == (base / "worker-1", [])
    assert workers.journal_dirs(two, None) == (base, [base / f"worker-{i}" for i in range(4)])


def log_lines(sup: Supervised, text: str, *, worker: bool) -> list[str]:
    """Messages of the shared (JSON lines) log containing ``text``, from the workers or from
    the supervisor (whose lines name no worker)."""
    records = [json.loads(line) for line in sup.log.read_text().splitlines()
               if line.startswith("{")]
    return [r["msg"] for r in records if text in r["msg"] and ("worker" in r) == worker]


async def wait_log(sup: Supervised, text: str, count: int, *, worker: bool) -> None:
    with anyio.fail_after(10):
        while len(log_lines(sup, text, worker=worker)) < count:
            await asyncio.sleep(0.02)


async def test_a_second_sigterm_to_the_supervisor_cuts_every_workers_drain_short(tmp_path):
    """The supervisor forwards a fast stop (``shutdown.CUT_SIGNAL``) to its workers: their
    streams are cut at once, not after drain_timeout_s, and every admitted request is recorded.
    A worker's own repeated SIGTERM does not cut it: systemd's KillMode=control-group sends
    one to every process of the unit, and the supervisor sends another."""
    async with running_mock() as mock:
        sup = supervised(tmp_path, mock.port)  # drain_timeout_s: the default 30 s
        try:
            await anyio.to_thread.run_sync(sup.start)
            kids = sup.children()
            done = await complete(sup.port, 4)
            streams = [asyncio.ensure_future(http(sup.port, "POST", "/v1/chat/completions",
                                                  chat(True, chunks=600, chunk_delay_ms=50),
                                                  auth_headers(), timeout=60))
                       for _ in range(6)]  # 30 s each
            with anyio.fail_after(10):
                while len(mock.requests) < 10:
                    await asyncio.sleep(0.01)
            for pid in kids:  # as systemd's control-group stop: each process gets SIGTERM
                os.kill(pid, signal.SIGTERM)
            await wait_log(sup, "shutting down: draining", 2, worker=True)
            sup.signal(signal.SIGTERM)  # the supervisor's first: a repeat for the workers
            await wait_log(sup, "SIGTERM again: still draining", 2, worker=True)
            assert not any(stream.done() for stream in streams)
            sup.signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(sup.wait, 10) == 0  # not after 30 s
            cut = await asyncio.gather(*streams, return_exceptions=True)
            assert all(isinstance(e, (h11.RemoteProtocolError, ConnectionError)) for e in cut)
            assert not [pid for pid in kids if alive(pid)]
        finally:
            sup.kill()
    conn = sqlite3.connect(sup.db)
    rows = dict(conn.execute("SELECT request_id, error_type FROM requests").fetchall())
    conn.close()
    assert len(rows) == 10 and [rows.pop(i) for i in done] == [None] * 4
    assert sorted(rows.values()) == ["aborted_shutdown"] * 6
    assert segments(tmp_path) == []
    assert len(log_lines(sup, "a second SIGTERM: drain cut short", worker=False)) == 1
    assert len(log_lines(sup, "SIGQUIT from the supervisor: drain cut short", worker=True)) == 2


def notify_after(sup: Supervised, index: int) -> list[str]:
    """The notify messages after ``index``, once the supervisor has exited."""
    with contextlib.suppress(AssertionError):
        sup.expect("NO-SUCH-STATE", 0)  # reads every datagram left
    return sup.messages[index + 1:]


async def test_a_reload_that_meets_the_drain_never_reports_ready_after_stopping(tmp_path):
    """A worker still reloading when the stop begins (held here with SIGSTOP) reports its
    READY=1 late: the supervisor must not pass it on to systemd after STOPPING=1. A SIGHUP
    during the drain is ignored, logged once."""
    async with running_mock() as mock:
        sup = supervised(tmp_path, mock.port)
        try:
            await anyio.to_thread.run_sync(sup.start)
            late = min(sup.children())
            os.kill(late, signal.SIGSTOP)  # takes its SIGHUP (and SIGTERM) after the stop began
            try:
                sup.signal(signal.SIGHUP)
                reloading = await anyio.to_thread.run_sync(sup.expect, "RELOADING=1")
                sup.signal(signal.SIGTERM)
                stopping = await anyio.to_thread.run_sync(sup.expect, "STOPPING=1", 10.0,
                                                          reloading + 1)
                sup.signal(signal.SIGHUP)  # in its wakeup fd before it can reap a worker
            finally:
                os.kill(late, signal.SIGCONT)
            assert await anyio.to_thread.run_sync(sup.wait) == 0
            after_stopping = notify_after(sup, stopping)
        finally:
            sup.kill()
    late_states = [m for m in after_stopping if {"READY=1", "RELOADING=1"} & set(m.splitlines())]
    assert late_states == []
    assert len(log_lines(sup, "SIGHUP ignored", worker=False)) == 1
