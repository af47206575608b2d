"""``kraken top --once`` against a real Kraken process, and its bucket arithmetic."""
from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys

import anyio
import pytest

from harness import auth_headers, free_port, http, kraken_process, running_mock
from kraken.top import frame as render_frame, parse as parse_metrics, quantile

pytestmark = pytest.mark.anyio
INF = math.inf


@pytest.mark.parametrize(("q", "buckets", "want"), [
    (0.5, {0.1: 0, 0.5: 10, 1.0: 20, INF: 20}, 0.5),
    (0.25, {0.1: 0, 0.5: 10, 1.0: 20, INF: 20}, 0.3),    # linear inside (0.1, 0.5]
    (0.99, {0.1: 0, 0.5: 10, 1.0: 20, INF: 20}, 0.99),
    (0.5, {0.1: 4, 0.5: 4, INF: 4}, 0.05),                # first bucket starts at 0
    (0.9, {0.1: 1, 0.5: 1, INF: 10}, 0.5),                # in +Inf: the highest finite bound
    (0.5, {0.1: 0, INF: 0}, None),                        # no observations
    (0.5, {}, None),
])
def test_quantile_follows_prometheus_histogram_quantile(q, buckets, want):
    got = quantile(q, buckets)
    assert got == pytest.approx(want) if want is not None else got is None


def top_once(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kraken", "top", "--once", "--interval", "0.2",
                           "--url", url], capture_output=True, text=True, timeout=30)


def seconds(cell: str) -> float:
    return float(cell[:-2]) / 1000 if cell.endswith("ms") else float(cell.removesuffix("s"))


def row(frame: str, provider: str) -> dict[str, str]:
    lines = frame.splitlines()
    header = next(line for line in lines if line.startswith("provider")).split()
    names = ["provider", "req/s", "5xx/s", "requests", "4xx", "5xx", "ttfb_p50", "ttfb_p99", "streams"]
    assert len(header) == len(names) + 2  # "ttfb p50", "ttfb p99" are two words each
    for line in lines:
        cells = line.split()
        if cells and cells[0] == provider:
            return dict(zip(names, cells))
    raise AssertionError(f"no row for {provider}:\n{frame}")


async def test_top_once_shows_requests_errors_ttfb_and_active_streams(tmp_path):
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        port = kp.port

        def chat(**extra) -> bytes:
            return json.dumps({"model": "mock-gpt", **extra,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()

        for _ in range(3):
            assert (await http(port, "POST", "/v1/chat/completions", chat(), auth_headers())).status == 200
        failed = await http(port, "POST", "/v1/chat/completions", chat(mock={"status": 500}),
                            auth_headers())
        assert failed.status == 502
        async with anyio.create_task_group() as tg:
            # One stream held open (~60 s of chunks) while top looks; cancelled after.
            tg.start_soon(http, port, "POST", "/v1/chat/completions",
                          chat(stream=True, mock={"chunks": 600, "chunk_delay_ms": 100}),
                          auth_headers(), 120.0)

            async def streaming() -> bool:
                text = (await http(port, "GET", "/metrics")).body.decode()
                return 'kraken_active_streams{provider="mockai"} 1.0' in text

            with anyio.fail_after(10):
                while not await streaming():
                    await anyio.sleep(0.05)
            result = await anyio.to_thread.run_sync(top_once, f"http://127.0.0.1:{port}/metrics")
            tg.cancel_scope.cancel()
        kp.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(kp.wait) == 0
    assert result.returncode == 0, result.stderr
    frame = result.stdout
    assert "\x1b[" not in frame  # --once: a plain frame, no screen control
    assert "active streams 1" in frame
    assert "handlers waiting 0" in frame
    mockai = row(frame, "mockai")
    assert mockai["requests"] == "4" and mockai["5xx"] == "1" and mockai["4xx"] == "0"
    assert mockai["streams"] == "1"
    p50, p99 = (seconds(mockai[k]) for k in ("ttfb_p50", "ttfb_p99"))
    assert 0 < p50 <= p99 < 5
    assert float(mockai["req/s"]) >= 0


def test_top_names_the_url_it_cannot_read():
    url = f"http://127.0.0.1:{free_port()}/metrics"
    result = top_once(url)
    assert result.returncode == 1
    assert url in result.stderr and "Traceback" not in result.stderr


def test_top_names_a_url_that_does_not_answer_http():
    """Another service at the URL (an SSH banner, not an HTTP status line): one line, no
    traceback."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def banner() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    threading.Thread(target=banner, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        result = top_once(url)
    finally:
        listener.close()
    assert result.returncode == 1
    assert url in result.stderr and "Traceback" not in result.stderr, result.stderr


def top_following(tmp_path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``kraken top --once`` without --url, in a directory with no kraken.toml."""
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("KRAKEN_")}
    return subprocess.run([sys.executable, "-m", "kraken", "top", "--once", "--interval", "0.2",
                           *args], cwd=tmp_path, env={**clean, **env}, capture_output=True,
                          text=True, timeout=30)


async def test_top_follows_the_configured_port_like_serve(tmp_path):
    async with running_mock() as mock, kraken_process(tmp_path, mock.port) as kp:
        port = kp.port
        from_file = await anyio.to_thread.run_sync(
            lambda: top_following(tmp_path, "--config", str(tmp_path / "k.toml"), env={}))
        from_env_file = await anyio.to_thread.run_sync(
            lambda: top_following(tmp_path, env={"KRAKEN_CONFIG": str(tmp_path / "k.toml")}))
        from_port = await anyio.to_thread.run_sync(
            lambda: top_following(tmp_path, env={"KRAKEN_PORT": str(port)}))
        kp.signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(kp.wait) == 0
    for result in (from_file, from_env_file, from_port):
        assert result.returncode == 0, result.stderr
        assert f"http://127.0.0.1:{port}/metrics" in result.stdout.splitlines()[0]
        assert "connections" in result.stdout


def test_top_with_a_bad_config_says_so_in_one_line(tmp_path):
    (tmp_path / "k.toml").write_text("[server]\nport = 70000\n")
    result = top_following(tmp_path, "--config", str(tmp_path / "k.toml"), env={})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"kraken: {tmp_path / 'k.toml'}: server.port must be between 0 and 65535, not 70000"]


def test_a_frame_shows_the_requests_waiting_for_their_turn():
    text = ("# TYPE kraken_handler_starts_waiting gauge\n"
            "kraken_handler_starts_waiting 48.0\n"
            "# TYPE kraken_active_connections gauge\n"
            "kraken_active_connections 1000.0\n")
    shown = render_frame(parse_metrics(text, 0.0), None, "http://127.0.0.1:1/metrics")
    assert "connections 1000" in shown and "handlers waiting 48" in shown
