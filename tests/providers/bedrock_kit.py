"""What the Bedrock tests share: the test key pair, a config naming the local Bedrock mock, and a
real Kraken started with that key pair in its environment (harness.running_kraken passes none)."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from harness import TEST_KEY_HASH, Running

from kraken import app, config
from kraken.mock.bedrock_mock import MockBedrock
from kraken.providers.sigv4 import Credentials

CREDS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                    "FwoGZXIvYXdzEBYaDEXAMPLESESSIONTOKEN")
"""AWS's documentation example key pair, with a session token (temporary credentials)."""
ENV = {"AWS_ACCESS_KEY_ID": CREDS.access_key_id,
       "AWS_SECRET_ACCESS_KEY": CREDS.secret_access_key,
       "AWS_SESSION_TOKEN": CREDS.session_token}
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-micro-v1:0"


def bedrock_doc(tmp: Path, mock: MockBedrock, **provider: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp / "kraken.db")},
        "meter": {"flush_interval_ms": 20},
        "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1"}],
        "providers": {"aws": {"kind": "bedrock", "region": mock.region, "base_url": mock.origin,
                              "models": [CLAUDE, NOVA, "meta.llama3-1-8b-instruct-v1:0"],
                              "read_timeout_s": 5.0, "connect_timeout_s": 2.0, **provider}},
    }


@contextlib.asynccontextmanager
async def kraken_with_env(doc: dict[str, Any], env: Mapping[str, str]) -> AsyncIterator[Running]:
    """harness.running_kraken, with ``env`` as the process environment the config reads."""
    cfg = config.from_mapping(doc, "<test>", env=env)
    loop = asyncio.get_running_loop()
    started: asyncio.Future = loop.create_future()
    stop = asyncio.Event()
    task = loop.create_task(app.serve(cfg, started=started, stop=stop))
    done, _ = await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield Running(started.result(), Path(cfg.store.path), stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def bedrock_kraken(tmp: Path, *, env: Mapping[str, str] = ENV,
                         mock_creds: Credentials = CREDS,
                         **provider: Any) -> AsyncIterator[tuple[MockBedrock, Running]]:
    async with MockBedrock(mock_creds) as mock:
        async with kraken_with_env(bedrock_doc(tmp, mock, **provider), env) as k:
            yield mock, k
