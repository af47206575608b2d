"""AWS Signature Version 4: AWS's published test-suite vectors (aws-sig-v4-test-suite, credentials
AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service "service"), and the Bedrock mock refusing
requests whose signature does not hold, over a real socket."""
from __future__ import annotations

import orjson
import pytest
from bedrock_kit import CREDS
from harness import http

from kraken.mock.bedrock_mock import MockBedrock
from kraken.providers.sigv4 import Credentials, Signer, canonical_request, signing_key

pytestmark = pytest.mark.anyio

SUITE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = "20150830T123600Z"
SCOPE = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
HOST = [("Host", "example.amazonaws.com")]


@pytest.mark.parametrize(("name", "method", "path", "query", "headers", "body", "expected"), [
    ("get-vanilla", "GET", "/", "", HOST, b"",
     "SignedHeaders=host;x-amz-date, "
     "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("post-vanilla", "POST", "/", "", HOST, b"",
     "SignedHeaders=host;x-amz-date, "
     "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("get-vanilla-query-order-key-case", "GET", "/", "Param2=value2&Param1=value1", HOST, b"",
     "SignedHeaders=host;x-amz-date, "
     "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("get-utf8", "GET", "/\u1234", "", HOST, b"",
     "SignedHeaders=host;x-amz-date, "
     "Signature=8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    ("post-x-www-form-urlencoded", "POST", "/", "",
     [("Content-Type", "application/x-www-form-urlencoded"), *HOST], b"Param1=value1",
     "SignedHeaders=content-type;host;x-amz-date, "
     "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
])
def test_aws_test_suite_vectors(name, method, path, query, headers, body, expected):
    signed = Signer(SUITE, "us-east-1", "service").sign(method, path, query, headers, body, WHEN)
    assert signed[-2] == ("x-amz-date", WHEN)
    assert signed[-1] == ("authorization", SCOPE + expected)


def test_derived_signing_key_matches_the_published_one():
    key = signing_key(SUITE.secret_access_key, "20150830", "us-east-1", "service")
    assert key.hex() == "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"


def test_the_signing_key_is_derived_once_per_date():
    signer = Signer(SUITE, "us-east-1", "service")
    first = signer.key("20150830")
    assert signer.key("20150830") is first
    assert signer.key("20150831") != first


def test_a_session_token_is_sent_and_signed():
    temporary = Credentials("AKIDEXAMPLE", SUITE.secret_access_key, "session-token")
    signed = dict(Signer(temporary, "us-east-1", "service").sign("GET", "/", "", HOST, b"", WHEN))
    assert signed["x-amz-security-token"] == "session-token"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in signed["authorization"]


def test_the_path_is_signed_encoded_once_more_than_sent():
    canonical, _ = canonical_request(
        "POST", "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse", "",
        [("host", "h")], "e3b0")
    assert canonical.split("\n")[1] == \
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"


def _signed_request(body: bytes, *, region: str = "us-east-1", when: str | None = None,
                    creds: Credentials = CREDS) -> dict[str, str]:
    """Signed as Kraken signs, for the host header ``harness.http`` sends."""
    headers = Signer(creds, region, "bedrock").sign(
        "POST", "/model/amazon.nova-micro-v1%3A0/converse", "",
        [("host", "127.0.0.1"), ("content-type", "application/json")], body, when)
    return {k: v for k, v in headers if k != "host"}


BODY = orjson.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})


@pytest.mark.parametrize("tamper", ["none", "body", "region", "stale", "secret", "token"])
async def test_the_mock_verifies_signatures_for_real(tamper):
    async with MockBedrock(CREDS) as mock:
        creds = CREDS
        if tamper == "secret":
            creds = Credentials(CREDS.access_key_id, "y" * 40, CREDS.session_token)
        elif tamper == "token":
            creds = Credentials(CREDS.access_key_id, CREDS.secret_access_key, "other-token")
        headers = _signed_request(BODY, creds=creds,
                                  region="eu-west-1" if tamper == "region" else "us-east-1",
                                  when="20150830T123600Z" if tamper == "stale" else None)
        sent = BODY.replace(b"hi", b"ho") if tamper == "body" else BODY
        reply = await http(mock.port, "POST", "/model/amazon.nova-micro-v1%3A0/converse", sent,
                           headers)
    if tamper == "none":
        assert reply.status == 200 and reply.json()["stopReason"] == "end_turn"
    else:
        assert reply.status == 403 and set(reply.json()) == {"message"}
