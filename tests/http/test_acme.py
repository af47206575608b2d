"""The plain-HTTP listener: ACME HTTP-01 challenge files from acme_dir, and the redirect to
HTTPS. Pure functions first, then the handler on a real H1Connection."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from h1wire import connect, parse_responses, read_to_eof, serve
from kraken.http.acme import acme_response, plain_http_handler, redirect_location

TOKEN = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
KEY_AUTH = TOKEN.encode() + b".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


@pytest.fixture
def acme_dir(tmp_path: Path) -> str:
    """A certbot webroot with one challenge file, laid out as certbot writes it."""
    challenges = tmp_path / "webroot" / ".well-known" / "acme-challenge"
    challenges.mkdir(parents=True)
    (challenges / TOKEN).write_bytes(KEY_AUTH)
    (tmp_path / "secret.txt").write_bytes(b"not for you")
    return str(tmp_path / "webroot")


# ---- acme_response --------------------------------------------------------------------------

def test_challenge_file_is_served(acme_dir):
    assert acme_response(acme_dir, f"/.well-known/acme-challenge/{TOKEN}") == (200, KEY_AUTH)


def test_unknown_token_is_404(acme_dir):
    assert acme_response(acme_dir, "/.well-known/acme-challenge/abc_DEF-123") == (404, b"")


@pytest.mark.parametrize("path", [
    "/.well-known/acme-challenge/",
    "/.well-known/acme-challenge/../../secret.txt",
    "/.well-known/acme-challenge/..%2F..%2Fsecret.txt",
    "/.well-known/acme-challenge/%2e%2e",
    "/.well-known/acme-challenge/..",
    "/.well-known/acme-challenge/.",
    f"/.well-known/acme-challenge/{TOKEN}/",
    f"/.well-known/acme-challenge/{TOKEN}/x",
    f"/.well-known/acme-challenge/{TOKEN}.txt",
    "/.well-known/acme-challenge/a b",
    "/.well-known/acme-challenge/a\x00b",
    "/.well-known/acme-challenge/" + "a" * 257,
    "/.well-known/acme-challenge//etc/passwd",
    "/.well-known/acme-challengeX",
    "/.well-known/other/" + TOKEN,
    "/" + TOKEN,
    "/secret.txt",
])
def test_only_tokens_inside_the_challenge_directory_are_served(acme_dir, path):
    assert acme_response(acme_dir, path) == (404, b"")


def test_no_acme_dir_serves_nothing():
    assert acme_response("", f"/.well-known/acme-challenge/{TOKEN}") == (404, b"")


def test_symlink_directory_entries_and_oversized_files_are_not_served(acme_dir, tmp_path):
    challenges = Path(acme_dir, ".well-known", "acme-challenge")
    (challenges / "link").symlink_to(tmp_path / "secret.txt")
    (challenges / "subdir").mkdir()
    (challenges / "big").write_bytes(b"x" * 5000)
    os.mkfifo(challenges / "fifo")
    for name in ("link", "subdir", "big", "fifo"):
        assert acme_response(acme_dir, f"/.well-known/acme-challenge/{name}") == (404, b"")


# ---- redirect_location ------------------------------------------------------------------------

@pytest.mark.parametrize("host, target, port, location", [
    ("api.example.com", "/v1/chat/completions", 443, "https://api.example.com/v1/chat/completions"),
    ("api.example.com:80", "/v1/models?x=1", 443, "https://api.example.com/v1/models?x=1"),
    ("API.Example.COM", "/", 443, "https://api.example.com/"),
    ("api.example.com", "/", 8443, "https://api.example.com:8443/"),
    ("127.0.0.1:8080", "/x", 8443, "https://127.0.0.1:8443/x"),
    ("[2001:db8::1]:80", "/x", 443, "https://[2001:db8::1]/x"),
    ("localhost", "//evil.example/x", 443, "https://localhost//evil.example/x"),
    ("api.example.com", "http://other.example/x", 443, "https://api.example.com/"),
    ("api.example.com", "*", 443, "https://api.example.com/"),
])
def test_redirect_keeps_host_and_path_on_https(host, target, port, location):
    assert redirect_location(host, target, port) == location


@pytest.mark.parametrize("host", [
    None, "", "evil.example/x", "evil.example\r\nSet-Cookie: a=b", "a b", "user@evil.example",
    "evil.example:80:80", "-bad.example", "bad-.example", "[not-ipv6]", "a" * 64 + ".example",
    "evil.example:123456",
])
def test_unusable_host_gives_no_redirect(host):
    assert redirect_location(host, "/", 443) is None


def test_target_with_control_characters_redirects_to_root():
    assert redirect_location("api.example.com", "/a\r\nb", 443) == "https://api.example.com/"


# ---- the handler on a real listener --------------------------------------------------------------

async def _exchange(port: int, raw: bytes) -> list:
    async with connect(port) as (reader, writer):
        writer.write(raw)
        data = await read_to_eof(reader)
    return parse_responses(data)


@pytest.mark.anyio
async def test_listener_serves_the_challenge_and_redirects_the_rest(acme_dir):
    async with serve(plain_http_handler(acme_dir, 443)) as server:
        challenge, redirect = await _exchange(server.port, (
            f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
            "POST /v1/chat/completions?stream=1 HTTP/1.1\r\nHost: api.example.com:80\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}").encode())
        async with connect(server.port) as (reader, writer):
            writer.write(f"HEAD /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\n"
                         "Host: api.example.com\r\nConnection: close\r\n\r\n".encode())
            head = await read_to_eof(reader)
    assert (challenge.status, challenge.body) == (200, KEY_AUTH)
    assert redirect.status == 308
    assert redirect.headers[b"location"] == b"https://api.example.com/v1/chat/completions?stream=1"
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ncontent-length: %d\r\n" % len(KEY_AUTH) in head.lower()
    assert head.endswith(b"\r\n\r\n")


@pytest.mark.anyio
@pytest.mark.parametrize("raw, status", [
    ("GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: a\r\n", 404),
    ("GET /.well-known/acme-challenge/../../secret.txt HTTP/1.1\r\nHost: a\r\n", 404),
    (f"POST /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n", 405),
    ("GET / HTTP/1.0\r\n", 400),
    ("GET / HTTP/1.1\r\nHost: evil.example/x\r\n", 400),
])
async def test_listener_refusals(acme_dir, raw, status):
    async with serve(plain_http_handler(acme_dir, 443)) as server:
        (resp,) = await _exchange(server.port, (raw + "Connection: close\r\n\r\n").encode())
    assert resp.status == status
    assert b"location" not in resp.headers
    assert b"not for you" not in resp.body


@pytest.mark.anyio
async def test_redirect_uses_the_https_port(acme_dir):
    async with serve(plain_http_handler(acme_dir, 8443)) as server:
        (resp,) = await _exchange(server.port, b"GET /v1/models HTTP/1.1\r\n"
                                  b"Host: 127.0.0.1:8080\r\nConnection: close\r\n\r\n")
    assert resp.headers[b"location"] == b"https://127.0.0.1:8443/v1/models"
