"""What the Vertex AI tests share: a test service-account key, its key file, the mock and a
Kraken with a ``kind = "vertex"`` provider in front of it."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import TEST_KEY_HASH, running_kraken

from kraken.mock.vertex_mock import MockVertex

CLIENT_EMAIL = "kraken-test@kraken-test.iam.gserviceaccount.com"
PROJECT, REGION = "kraken-test", "us-central1"
PREFIX = f"/v1/projects/{PROJECT}/locations/{REGION}"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
PRIVATE_KEY_BODY = PRIVATE_PEM.splitlines()[1]
"""A line of the key's base64: must never appear in a log, an error or the database."""


def mock_vertex(**kwargs) -> MockVertex:
    return MockVertex(_KEY.public_key(), CLIENT_EMAIL, project=PROJECT, region=REGION, **kwargs)


def write_key_file(tmp: Path, mock: MockVertex, **override) -> Path:
    path = tmp / "service-account.json"
    path.write_text(json.dumps({**mock.key_file(PRIVATE_PEM), **override}))
    return path


def vertex_doc(tmp: Path, mock: MockVertex, **provider) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "store": {"path": str(tmp / "kraken.db")},
        "meter": {"flush_interval_ms": 20},
        "keys": [{"id": "testkey", "hash": TEST_KEY_HASH, "customer_id": "cust_1"}],
        "providers": {"vertex": {
            "kind": "vertex", "project": PROJECT, "region": REGION, "base_url": mock.origin,
            "credentials_file": str(write_key_file(tmp, mock)),
            "models": ["gemini-2.5-flash", "claude-sonnet-4-5@20250929"],
            "read_timeout_s": 5.0, "connect_timeout_s": 2.0, **provider}},
    }


@contextlib.asynccontextmanager
async def vertex_kraken(tmp: Path, **provider):
    async with mock_vertex() as mock:
        async with running_kraken(vertex_doc(tmp, mock, **provider)) as k:
            yield mock, k
