"""The service-account OAuth2 token (kraken/providers/google_auth.py) against the Vertex mock's
token endpoint over a real socket: the JWT bearer grant, caching, refresh, single flight, and
errors that name the problem without the key, the assertion or the token."""
from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import free_port, wait_for
from vertex_kit import CLIENT_EMAIL, PRIVATE_KEY_BODY, mock_vertex, write_key_file

from kraken import metrics
from kraken.providers.google_auth import (
    CLOUD_PLATFORM_SCOPE,
    CredentialsMissing,
    TokenEndpointUnavailable,
    TokenExchangeFailed,
    TokenSource,
    load_service_account,
)

pytestmark = pytest.mark.anyio


def refusals() -> float:
    """Refused exchanges of provider "vertex" so far (``kraken_provider_token_exchanges_total``)."""
    value = metrics.REGISTRY.get_sample_value(
        "kraken_provider_token_exchanges_total", {"provider": "vertex", "outcome": "refused"})
    return value or 0.0


def source_for(path, **kwargs) -> TokenSource:
    account, problem = load_service_account(str(path))
    assert problem is None
    return TokenSource("vertex", account, None, **kwargs)


def assert_no_secret(text: str, *tokens: str) -> None:
    assert PRIVATE_KEY_BODY not in text
    assert "BEGIN PRIVATE KEY" not in text
    assert "assertion" not in text and "eyJ" not in text  # no JWT (base64 of '{"')
    for token in tokens:
        assert token not in text


async def test_jwt_grant_is_signed_rs256_and_names_account_audience_and_scope(tmp_path):
    async with mock_vertex() as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        token = await tokens.token()
        assert token.startswith("ya29.mock-")  # issued: the mock verified the signature
        assert mock.exchanges == 1
        claims = mock.claims[0]
        assert claims["iss"] == CLIENT_EMAIL
        assert claims["aud"] == mock.token_uri
        assert claims["scope"] == CLOUD_PLATFORM_SCOPE
        assert claims["exp"] - claims["iat"] == 3600


async def test_a_key_the_account_does_not_hold_is_refused_as_502_without_secrets(tmp_path):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    async with mock_vertex() as mock:
        tokens = source_for(write_key_file(tmp_path, mock, private_key=other))
        with pytest.raises(TokenExchangeFailed) as caught:
            await tokens.token()
        assert caught.value.status == 502 and mock.exchanges == 0
        assert "invalid_grant" in caught.value.message
        assert_no_secret(caught.value.message)
        assert other.splitlines()[1] not in caught.value.message


async def test_the_token_is_cached_one_exchange_for_many_requests(tmp_path):
    async with mock_vertex() as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        seen = {await tokens.token() for _ in range(25)}
        assert len(seen) == 1 and mock.exchanges == 1 and tokens.exchanges == 1


async def test_a_token_inside_the_refresh_margin_is_used_while_one_refresh_runs(tmp_path):
    # 200 s of life is inside the 300 s margin: still sent, but replaced in the background
    async with mock_vertex(expires_in=200) as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        first = await tokens.token()
        assert mock.exchanges == 1
        assert await tokens.token() == first  # no wait: the current token goes out
        assert await tokens.token() == first  # the refresh in flight is not started twice
        assert tokens.exchanges == 2
        await wait_for(lambda: mock.exchanges == 2)
        assert await tokens.token() not in (first, None)


async def test_a_failed_background_refresh_keeps_the_token_and_is_not_retried_at_once(tmp_path):
    async with mock_vertex(expires_in=200) as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        first = await tokens.token()
        mock.token_status = 400
        refused = refusals()
        assert await tokens.token() == first  # starts the refresh, which the endpoint refuses
        await wait_for(lambda: refusals() == refused + 1)  # the refresh has ended
        assert [await tokens.token() for _ in range(5)] == [first] * 5
        assert tokens.exchanges == 2 and mock.exchanges == 1  # no exchange per request


async def test_an_expiring_token_is_not_sent_the_request_waits_for_a_new_one(tmp_path):
    async with mock_vertex(expires_in=10) as mock:  # under the 30 s safety: never usable later
        tokens = source_for(write_key_file(tmp_path, mock))
        first = await tokens.token()
        second = await tokens.token()
        assert first != second and mock.exchanges == 2


async def test_concurrent_requests_share_one_exchange(tmp_path):
    async with mock_vertex() as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        got = await asyncio.gather(*(tokens.token() for _ in range(50)))
        assert len(set(got)) == 1
        assert mock.exchanges == 1 and tokens.exchanges == 1


async def test_concurrent_waiters_of_a_failed_exchange_each_get_the_error_once(tmp_path):
    async with mock_vertex() as mock:
        mock.token_status = 503
        tokens = source_for(write_key_file(tmp_path, mock))
        results = await asyncio.gather(*(tokens.token() for _ in range(10)),
                                       return_exceptions=True)
        assert all(isinstance(r, TokenEndpointUnavailable) and r.status == 503 for r in results)
        assert len({id(r) for r in results}) == 10  # a fresh error each, not one shared
        assert tokens.exchanges == 1
        mock.token_status = None
        assert (await tokens.token()).startswith("ya29.")  # the next request tries again


async def test_token_endpoint_refusal_and_outage_are_502_and_503(tmp_path):
    async with mock_vertex() as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        mock.token_status = 400
        with pytest.raises(TokenExchangeFailed) as refused:
            await tokens.token()
        assert refused.value.status == 502 and refused.value.code == "provider_token_refused"
    unreachable = write_key_file(tmp_path, mock, token_uri=f"http://127.0.0.1:{free_port()}/token")
    with pytest.raises(TokenEndpointUnavailable) as down:
        await source_for(unreachable).token()
    assert down.value.status == 503 and down.value.code == "provider_token_unavailable"
    assert_no_secret(refused.value.message + down.value.message)


async def test_a_refused_token_is_forgotten_and_exchanged_again(tmp_path):
    async with mock_vertex() as mock:
        tokens = source_for(write_key_file(tmp_path, mock))
        first = await tokens.token()
        tokens.invalidate()
        assert await tokens.token() != first and mock.exchanges == 2


@pytest.mark.parametrize("change, problem", [
    (None, "cannot be read"),
    ({"private_key": None}, "has no private_key"),
    ({"client_email": ""}, "has no client_email"),
    ({"private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"},
     "not a PEM private key"),
    ({"token_uri": "file:///etc/passwd"}, "token_uri is not an http(s) URL"),
])
async def test_missing_or_unreadable_credentials_name_what_is_missing(tmp_path, change, problem):
    mock = mock_vertex()
    path = tmp_path / "absent.json"
    if change is not None:
        path = write_key_file(tmp_path, mock)
        doc = {k: v for k, v in json.loads(path.read_text()).items() if change.get(k, 1)}
        doc.update({k: v for k, v in change.items() if v})
        path.write_text(json.dumps(doc))
    account, found = load_service_account(str(path))
    assert account is None and problem in found and str(path) in found
    with pytest.raises(CredentialsMissing) as caught:
        await TokenSource("vertex", None, found).token()
    assert caught.value.status == 503 and problem in caught.value.message
    assert_no_secret(found)


@pytest.mark.parametrize("answer, error, status", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", TokenEndpointUnavailable, 503),  # not HTTP at all
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
     TokenExchangeFailed, 502),  # HTTP, but no access token in it
])
async def test_an_answer_that_is_not_a_token_is_an_error_not_a_credential(tmp_path, answer,
                                                                          error, status):
    async def handle(reader, writer):
        await reader.read(65536)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        path = write_key_file(tmp_path, mock_vertex(), token_uri=f"http://127.0.0.1:{port}/token")
        with pytest.raises(error) as caught:
            await source_for(path).token()
        assert caught.value.status == status
        assert_no_secret(caught.value.message)
    finally:
        server.close()
        await server.wait_closed()
